"""`gate4 dev scale-out` end to end: the command a developer runs, on a database it creates.

The replica guarantees are tested on the same processes in test_replicas.py (both start
cli.devstack's ScaleOut); this test holds what only the command does: create the database,
print every process with its port, pid and log, seed credentials that work on both gateways,
report a killed replica while the others carry on, and stop everything on Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from cli.credentials import CREDENTIALS_FILE
from cli.devstack import SCALE_OUT, replica_names
from tests.support import postgres
from tests.support.shell import source_env
from tests.support.stack import TEST_ENV

pytestmark = pytest.mark.postgres

START_TIMEOUT = 180.0
#: `  risk-1        ready on 127.0.0.1:41234        pid 4242    log var/logs/risk-1.log`
READY = re.compile(r"^  (\S+)\s+ready on (?:http://)?127\.0\.0\.1:(\d+)\s+pid (\d+)\s+log (\S+)")


def gate4_command() -> list[str]:
    script = Path(sys.executable).with_name("gate4")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def _wait_output(out: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in (output := out.read_text()):
        assert proc.poll() is None, f"gate4 dev scale-out exited {proc.returncode}:\n{output}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f}s:\n{output}"
        time.sleep(0.1)
    return output


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by the command) is gone too.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ", 1)[1].startswith("Z")


def test_scale_out_starts_the_replicas_reports_a_failover_and_stops_on_ctrl_c(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    # A database that does not exist yet: the command creates it.
    name = f"gate4_test_{uuid.uuid4().hex[:16]}"
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    var_dir = tmp_path / "var"
    out = tmp_path / "scale-out.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE4_")}
    env.update(TEST_ENV)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*gate4_command(), "dev", "scale-out", "--postgres", url, "--var-dir", str(var_dir)],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    pids: dict[str, int] = {}
    try:
        started = _wait_output(out, "Press Ctrl-C", proc, START_TIMEOUT)
        assert "database      created" in started
        ready = {m[1]: m for m in map(READY.match, started.splitlines()) if m}
        expected = [n for kind, count in SCALE_OUT.items() for n in replica_names(kind, count)]
        assert sorted(ready) == sorted(expected), started
        assert len({m[2] for m in ready.values()}) == len(expected), "one port each"
        pids = {n: int(m[3]) for n, m in ready.items()}
        for n, m in ready.items():
            assert (var_dir / "logs" / f"{n}.log").resolve() == (tmp_path / m[4]).resolve()
        assert (var_dir / "logs" / "migrations.log").exists()

        creds = source_env((var_dir / CREDENTIALS_FILE).read_text())
        headers = {
            "Authorization": f"Bearer {creds['TOKEN']}",
            "X-API-Key": creds["API_KEY"],
            "X-Tenant-Id": creds["TENANT_ID"],
            "X-User-Id": creds["USER_ID"],
        }
        gateways = [f"http://127.0.0.1:{ready[g][2]}" for g in ("gateway-1", "gateway-2")]

        def policy_everywhere() -> list[int]:
            return [
                httpx.get(f"{g}/v1/risk/policy", headers=headers, timeout=10).status_code
                for g in gateways
            ]

        assert policy_everywhere() == [200, 200], "the demo key and policy work on both"

        os.kill(pids["risk-1"], signal.SIGKILL)
        _wait_output(out, "risk-1 exited (killed by SIGKILL); risk-2 carries on", proc, 30)
        # Each gateway's risk calls move to risk-2 (round_robin skips the dead replica).
        deadline = time.monotonic() + 20
        while (answers := policy_everywhere()) != [200, 200]:
            assert time.monotonic() < deadline, answers
            time.sleep(0.1)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.read_text()
        stopped = out.read_text()
        assert "SIGINT received: stopping" in stopped and stopped.rstrip().endswith("stopped")
        assert [n for n, pid in pids.items() if not _gone(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids.values():
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        postgres.drop_database(url, postgres_admin_url)
