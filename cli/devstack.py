"""Starts and stops the platform's processes: the four services and the gateway.

`gate4 dev up` (what `make run` calls) and the test suite both use this module, so tests
exercise the same processes, on free loopback ports, that a developer runs. `ScaleOut` is
the replicated variant: `gate4 dev scale-out` and the replica tests (tests/support/replicas.py)
run the same topology from it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from sqlalchemy.engine import make_url

from cli.devca import ensure_dev_ca
from services.runtime.config import SERVICES, Settings
from services.runtime.identity import channel_credentials

GATEWAY = "gateway"
PROCESSES = (*SERVICES, GATEWAY)


#: Where free_port looks when the kernel's ephemeral range is known: below it.
_PORTS_FROM = 10_000
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return None
    return int(low), int(high)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before by this process.

    Chosen below the kernel's ephemeral range where it is known: a port from that range can
    become the source port of any outgoing connection (a database, a gRPC channel) between
    now and the moment the process it is for binds it."""
    ephemeral = _ephemeral_range()
    if ephemeral is not None and ephemeral[0] > _PORTS_FROM + 1_000:
        for _ in range(200):
            port = random.randrange(_PORTS_FROM, ephemeral[0])
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


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
    #: What runs (`risk`, `gateway`, ...) when `name` tells replicas apart (`risk-2`).
    kind: str = ""
    _log: object = field(default=None, repr=False)

    @property
    def component(self) -> str:
        return self.kind or self.name

    @property
    def port(self) -> int:
        if self.component == GATEWAY:
            return int(self.env["GATE4_GATEWAY_PORT"])
        return int(self.env[f"GATE4_{self.component.upper()}_ADDR"].rsplit(":", 1)[1])

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process record
        self._log = log
        module = "gateway" if self.component == GATEWAY else f"services.{self.component}"
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
        if self.component == GATEWAY:
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


# -- local scale-out ------------------------------------------------------------------------

#: What `gate4 dev scale-out` runs on one PostgreSQL database: two of each process on the
#: order path, as the prod overlay runs at least, and one audit and one conversation.
SCALE_OUT: Mapping[str, int] = {
    "audit": 1,
    "risk": 2,
    "execution": 2,
    "conversation": 1,
    GATEWAY: 2,
}
MIGRATIONS_MODULE = "services.runtime.storage.migrations"


def replica_names(kind: str, count: int) -> list[str]:
    """`risk-1`, `risk-2`, ...; a process that runs once keeps its plain name."""
    return [kind] if count == 1 else [f"{kind}-{i}" for i in range(1, count + 1)]


def ensure_database(url: str) -> bool:
    """Creates the PostgreSQL database `url` names unless it exists (connecting to the
    server's `postgres` database with the same credentials); True when it created it."""
    target = make_url(url)
    name = target.database
    if not name:
        raise ValueError(f"{target.render_as_string()} names no database")
    admin = target.set(drivername="postgresql", database="postgres")
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


class MigrationFailed(RuntimeError):
    """The migration step exited non-zero; nothing was started."""


class ScaleOut(Stack):
    """Replicas of the platform's processes (`SCALE_OUT` by default) on one database, each on
    a free loopback port of its own, named `audit`, `risk-1`, `gateway-2`, ...

    Every process listens on its own GATE4_<NAME>_ADDR; callers get the list of all replicas
    of a service there (`127.0.0.1:a,127.0.0.1:b`), which services/runtime/clients.py dials
    with round_robin, so a killed replica's calls move to the others. The schema is migrated
    once before anything starts, as the Kubernetes migration Job does, and the processes skip
    it (GATE4_MIGRATE_ON_START=false): replicas never race on DDL.
    """

    def __init__(
        self,
        var_dir: Path,
        database_url: str,
        *,
        counts: Mapping[str, int] = SCALE_OUT,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        cwd: Path | None = None,
    ) -> None:
        self.var_dir = var_dir
        self.database_url = database_url
        self.python = python
        self.cwd = cwd
        # Start order: services in PROCESSES order (audit first), gateways last.
        kinds = {
            name: kind for kind in PROCESSES for name in replica_names(kind, counts.get(kind, 0))
        }
        self.ports = {name: free_port() for name in kinds}
        self.env = {
            **os.environ,
            "GATE4_MIGRATE_ON_START": "false",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            "GATE4_VAR_DIR": str(var_dir),
            "GATE4_DATABASE_URL": database_url,
            "GATE4_GATEWAY_HOST": "127.0.0.1",
        }
        for kind in SERVICES:
            replicas = [f"127.0.0.1:{self.ports[n]}" for n, k in kinds.items() if k == kind]
            self.env[f"GATE4_{kind.upper()}_ADDR"] = ",".join(replicas)
        self.processes = {
            name: ManagedProcess(
                name,
                {**self.env, **_own_address(kind, self.ports[name])},
                var_dir / "logs" / f"{name}.log",
                python=python,
                cwd=cwd,
                kind=kind,
            )
            for name, kind in kinds.items()
        }

    @property
    def gateways(self) -> list[ManagedProcess]:
        return [p for p in self.processes.values() if p.component == GATEWAY]

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p.port}" for p in self.gateways]

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls[0]

    @property
    def migrations_log(self) -> Path:
        return self.var_dir / "logs" / "migrations.log"

    def replicas_of(self, kind: str) -> list[ManagedProcess]:
        return [p for p in self.processes.values() if p.component == kind]

    def migrate(self, timeout: float = 120.0) -> None:
        """Applies every component's migrations (`python -m services.runtime.storage.
        migrations`, with the processes' environment); its output goes to `migrations_log`."""
        self.migrations_log.parent.mkdir(parents=True, exist_ok=True)
        with self.migrations_log.open("ab") as log:
            done = subprocess.run(  # noqa: S603
                [self.python, "-m", MIGRATIONS_MODULE],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise MigrationFailed(
                f"migrations failed (exit code {done.returncode}); see {self.migrations_log}"
            )

    def start(
        self, timeout: float = 60.0, wait: Callable[[ManagedProcess], None] | None = None
    ) -> None:
        """Migrates, then starts every service at once, then the gateways. `wait` waits for
        one process to be ready (default: `wait_ready(timeout)`); the CLI reports each."""
        wait = wait or (lambda proc: proc.wait_ready(timeout))
        self.prepare()
        self.migrate()
        services = [p for p in self.processes.values() if p.component != GATEWAY]
        for tier in (services, self.gateways):
            for proc in tier:
                proc.start()
            for proc in tier:
                wait(proc)

    def stop(self) -> None:
        """Gateways first, audit last (as Stack.stop), so no new call reaches a draining
        service and the others can still ship their outbox. The replicas of a tier drain
        together; every process is stopped even when stopping another fails."""
        others = [p for p in self.processes.values() if p.component not in (GATEWAY, "audit")]
        errors: list[BaseException] = []
        for tier in (self.gateways, others, self.replicas_of("audit")):
            pool = ThreadPoolExecutor(max_workers=max(1, len(tier)))
            try:
                for future in [pool.submit(proc.stop) for proc in tier]:
                    error = future.exception()
                    if error is not None:
                        errors.append(error)
            finally:
                # Not waiting here: an interrupt (a second Ctrl-C) must reach the caller now.
                pool.shutdown(wait=False)
        if errors:
            raise errors[0]


def _own_address(kind: str, port: int) -> dict[str, str]:
    """What a replica listens on: its own address in place of the list its callers dial, and
    a metrics port of its own (two replicas on one inherited port could not both bind it)."""
    if kind == GATEWAY:
        return {"GATE4_GATEWAY_PORT": str(port)}
    return {
        f"GATE4_{kind.upper()}_ADDR": f"127.0.0.1:{port}",
        f"GATE4_{kind.upper()}_METRICS_PORT": str(free_port()),
    }
