"""`gate4 dev up` end to end: the real four services and gateway, as `make run` starts them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.credentials import CREDENTIALS_FILE
from cli.devstack import PROCESSES, free_port
from tests.cli.helpers import stack_processes
from tests.support.shell import source_env

START_TIMEOUT = 120.0


def gate4_command() -> list[str]:
    script = Path(sys.executable).with_name("gate4")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def platform_env() -> dict[str, str]:
    # SQLite under the test's var dir whatever the caller's shell says; free ports throughout.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE4_")}
    for name in PROCESSES[:-1]:
        env[f"GATE4_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    env["GATE4_GATEWAY_PORT"] = str(free_port())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_dev_up_serves_the_runbook_examples_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    creds_path = var_dir / CREDENTIALS_FILE
    out_path = tmp_path / "dev-up.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [*gate4_command(), "dev", "up", "--var-dir", str(var_dir)],
            cwd=tmp_path,
            env=platform_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def output() -> str:
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((var_dir / "logs").glob("*.log"))
        )
        return out_path.read_text() + logs

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Press Ctrl-C" not in out_path.read_text():
            assert proc.poll() is None, f"gate4 dev up exited {proc.returncode}:\n{output()}"
            assert time.monotonic() < deadline, f"not up after {START_TIMEOUT}s:\n{output()}"
            time.sleep(0.2)

        assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
        env = source_env(creds_path.read_text())
        base = env["PLATFORM_API_BASE"]
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/readyz").status_code == 200

            # The README's 404 example: a canonical problem+json with the requestId.
            resp = client.get(
                "/v1/deployments/dep_missing",
                headers={
                    "Authorization": f"Bearer {env['TOKEN']}",
                    "X-API-Key": env["API_KEY"],
                    "X-Tenant-Id": env["TENANT_ID"],
                    "X-User-Id": env["USER_ID"],
                },
            )
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["code"] == "NOT_FOUND"
        assert problem["status"] == 404
        assert problem["requestId"] == resp.headers["x-request-id"]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, output()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Never leave platform processes behind, even when the launcher itself failed.
        for pid in stack_processes(var_dir):
            os.kill(pid, signal.SIGKILL)

    text = out_path.read_text()
    assert "SIGINT received: stopping" in text
    assert "stopping gateway, conversation, execution, risk, audit" in text
    assert text.rstrip().endswith("stopped"), text
    assert "did not stop cleanly" not in text, text
    assert stack_processes(var_dir) == []
    for secret in (env["TOKEN"], env["API_KEY"]):
        assert secret not in text
