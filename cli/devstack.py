"""Starts and stops the platform's processes: the four services and the gateway.

`gate4 dev up` (what `make run` calls) and the test suite both use this module, so tests
exercise the same processes, on free loopback ports, that a developer runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.devca import ensure_dev_ca
from services.runtime.config import SERVICES, Settings
from services.runtime.identity import channel_credentials

GATEWAY = "gateway"
PROCESSES = (*SERVICES, GATEWAY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_env(
    var_dir: Path, ports: Mapping[str, int], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment that points every process at the same var dir and addresses."""
    env = dict(os.environ)
    env["GATE4_VAR_DIR"] = str(var_dir)
    for name in SERVICES:
        env[f"GATE4_{name.upper()}_ADDR"] = f"127.0.0.1:{ports[name]}"
    env["GATE4_GATEWAY_HOST"] = "127.0.0.1"
    env["GATE4_GATEWAY_PORT"] = str(ports[GATEWAY])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings the processes read from `env` (a Stack's environment, not os.environ)."""
    values = {
        name: env[f"GATE4_{name.upper()}"]
        for name in Settings.model_fields
        if f"GATE4_{name.upper()}" in env
    }
    return Settings.model_validate(values)


@dataclass
class ManagedProcess:
    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: The interpreter that runs `-m <module>`: this one, or an installed package's venv.
    python: str = sys.executable
    #: Working directory of the process (None: this one's). `-m` puts it first on sys.path.
    cwd: Path | None = None
    _log: object = field(default=None, repr=False)

    @property
    def port(self) -> int:
        if self.name == GATEWAY:
            return int(self.env["GATE4_GATEWAY_PORT"])
        return int(self.env[f"GATE4_{self.name.upper()}_ADDR"].rsplit(":", 1)[1])

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process record
        self._log = log
        module = "gateway" if self.name == GATEWAY else f"services.{self.name}"
        self.proc = subprocess.Popen(  # noqa: S603
            [self.python, "-m", module],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            return False
        if self.name == GATEWAY:
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
                )
            except httpx.HTTPError:
                return False
        addr = f"127.0.0.1:{self.port}"
        # Probed as the gateway would dial it: with TLS on, the handshake must work too.
        credentials = channel_credentials(settings_from(self.env), GATEWAY)
        try:
            with (
                grpc.insecure_channel(addr)
                if credentials is None
                else grpc.secure_channel(addr, credentials)
            ) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it outlives the timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


class Stack:
    """A set of platform processes sharing one var dir and environment."""

    def __init__(
        self,
        var_dir: Path,
        *,
        ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        names: Iterable[str] = PROCESSES,
        python: str = sys.executable,
        cwd: Path | None = None,
    ) -> None:
        """`python` and `cwd` run the processes from another installation, e.g. a venv
        with the built wheel, from a directory outside the source tree."""
        self.var_dir = var_dir
        self.ports = dict(ports or {name: free_port() for name in PROCESSES})
        self.env = stack_env(var_dir, self.ports, env)
        self.processes = {
            name: ManagedProcess(
                name, dict(self.env), var_dir / "logs" / f"{name}.log", python=python, cwd=cwd
            )
            for name in names
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[GATEWAY]}"

    def prepare(self) -> None:
        """What the processes need before they start: the dev CA when TLS is on."""
        settings = settings_from(self.env)
        if settings.tls != "off":
            ensure_dev_ca(settings.tls_path())

    def start(self, timeout: float = 60.0) -> None:
        self.prepare()
        # Services first (the gateway's readiness depends on them), all started before waiting.
        services = [p for n, p in self.processes.items() if n != GATEWAY]
        for proc in services:
            proc.start()
        for proc in services:
            proc.wait_ready(timeout)
        if GATEWAY in self.processes:
            self.processes[GATEWAY].start()
            self.processes[GATEWAY].wait_ready(timeout)

    def restart(self, name: str, timeout: float = 60.0) -> None:
        proc = self.processes[name]
        proc.stop()
        proc.start()
        proc.wait_ready(timeout)

    def stop(self) -> None:
        # Gateway first so no new traffic reaches services while they drain.
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
