"""`gate4 dev up` with stand-in processes (tests/cli/fakestack.py): every path but the
real services, which tests/cli/test_dev_up.py covers end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.credentials import CREDENTIALS_FILE, gateway_keys
from cli.devstack import PROCESSES, free_port
from cli.main import main
from services.runtime.auth import TokenVerifier, api_key_id
from services.runtime.config import Settings
from services.runtime.roles import PLATFORM as ROLES
from tests.cli import fakestack
from tests.cli.helpers import lookup_api_key, stack_pids, stack_processes
from tests.support.shell import source_env

STOP_ORDER = ["gateway", "conversation", "execution", "risk", "audit"]


def port_env() -> dict[str, str]:
    env = {f"GATE4_{name.upper()}_ADDR": f"127.0.0.1:{free_port()}" for name in PROCESSES}
    env["GATE4_GATEWAY_PORT"] = str(free_port())
    del env["GATE4_GATEWAY_ADDR"]
    return env


@pytest.fixture
def ports(gate4_env: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = port_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def stop_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stop-order.log"
    monkeypatch.setenv("FAKESTACK_ORDER_LOG", str(path))
    return path


def read_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_taken_port_is_named_and_nothing_starts(
    ports: dict[str, str], gate4_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(ports["GATE4_RISK_ADDR"].rsplit(":", 1)[1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert main(["dev", "up"]) == 1
    err = capsys.readouterr().err
    assert f"port {port} (for risk, from GATE4_RISK_ADDR) is already in use" in err
    assert not (gate4_env / "logs").exists()


def test_two_processes_on_one_port_is_a_usage_error(
    ports: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_AUDIT_ADDR", ports["GATE4_RISK_ADDR"])
    assert main(["dev", "up"]) == 2
    assert "GATE4_AUDIT_ADDR and GATE4_RISK_ADDR both use port" in capsys.readouterr().err


def test_refused_in_production(
    ports: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_ENV", "prod")
    assert main(["dev", "up"]) == 2
    assert "GATE4_ENV=prod" in capsys.readouterr().err


def test_process_dying_at_start_is_named_with_its_log(
    ports: dict[str, str],
    stop_log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fakestack.install(monkeypatch)
    # Risk dies once the others are up: a process SIGTERMed before its handler is installed
    # would die without recording its place in the stop order.
    fail = "import time; time.sleep(1); print('boom: no risk today'); raise SystemExit(3)"
    monkeypatch.setenv("FAKESTACK_SCRIPTS", json.dumps({"risk": fail}))
    assert main(["dev", "up"]) == 1
    captured = capsys.readouterr()
    assert (
        "gate4: error: PROCESS_FAILED: risk exited before it was ready (exit code 3); see "
        "var/logs/risk.log" in captured.err
    )
    assert "boom: no risk today" in captured.err
    assert "gateway" not in read_lines(stop_log)  # never started
    assert read_lines(stop_log) == ["conversation", "execution", "audit"]
    assert "stopping conversation, execution, audit" in captured.out


def test_seeds_demo_tenant_without_echoing_secrets_and_reports_a_later_death(
    ports: dict[str, str],
    gate4_env: Path,
    stop_log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fakestack.install(monkeypatch)
    dies_later = fakestack.SERVE.replace("time.sleep(1)", "time.sleep(3); sys.exit(4)")
    monkeypatch.setenv("FAKESTACK_SCRIPTS", json.dumps({"execution": dies_later}))
    assert main(["dev", "up"]) == 1
    captured = capsys.readouterr()

    path = gate4_env / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = source_env(path.read_text())
    gateway_port = ports["GATE4_GATEWAY_PORT"]
    assert env["PLATFORM_API_BASE"] == env["GATE4_API_BASE"] == f"http://127.0.0.1:{gateway_port}"
    assert (env["TENANT_ID"], env["USER_ID"]) == ("demo", "demo-user")
    claims = TokenVerifier(Settings()).verify(env["TOKEN"])
    assert claims.roles == set(ROLES)
    assert abs(claims.expires_at - (time.time() + 12 * 3600)) < 60
    record = lookup_api_key(gate4_env, env["API_KEY"])
    assert record is not None and record.tenant_id == "demo"

    # Progress and banner name things; the secrets stay in the file.
    for secret in (env["TOKEN"], env["API_KEY"]):
        assert secret not in captured.out
        assert secret not in captured.err
    for name in PROCESSES:
        assert re.search(rf"^  {name} +ready on ", captured.out, re.M), name
    assert f"Gate4 Platform is up: http://127.0.0.1:{gateway_port}" in captured.out
    assert "source var/dev-credentials.env" in captured.out
    assert '"$PLATFORM_API_BASE/v2/conversations/sessions"' in captured.out
    assert "var/logs/<name>.log" in captured.out

    assert "execution exited unexpectedly (exit code 4); see var/logs/execution.log" in (
        captured.err
    )
    assert read_lines(stop_log) == [n for n in STOP_ORDER if n != "execution"]


def start_fakestack(
    tmp_path: Path, scripts: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """`gate4 dev up` in its own process (signals go to it, not to pytest), once it is up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE4_")}
    env.update(
        port_env(),
        FAKESTACK_ORDER_LOG=str(tmp_path / "stop-order.log"),
        FAKESTACK_SCRIPTS=json.dumps(scripts or {}),
        PYTHONUNBUFFERED="1",
    )
    out_path = tmp_path / "out.txt"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.fakestack", "dev", "up", "--var-dir", "state"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "Press Ctrl-C" not in out_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_fakestack(proc)
            pytest.fail(out_path.read_text())
        time.sleep(0.1)
    return proc, out_path


def stop_fakestack(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def assert_all_gone(output: str, var_dir: Path) -> None:
    pids = stack_pids(output)
    assert len(pids) == len(PROCESSES)
    assert stack_processes(var_dir) == []


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_signal_stops_everything_gateway_first_and_exits_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc, out_path = start_fakestack(tmp_path)
    try:
        proc.send_signal(sig)
        assert proc.wait(30) == 0, out_path.read_text()
    finally:
        stop_fakestack(proc)
    output = out_path.read_text()
    assert f"{sig.name} received: stopping" in output
    assert output.rstrip().endswith("stopped")
    assert "did not stop cleanly" not in output
    assert read_lines(tmp_path / "stop-order.log") == STOP_ORDER
    assert_all_gone(output, tmp_path / "state")
    assert stat.S_IMODE((tmp_path / "state" / CREDENTIALS_FILE).stat().st_mode) == 0o600


def test_one_ctrl_c_delivered_twice_still_drains(tmp_path: Path) -> None:
    # Under `make run` the terminal's SIGINT reaches gate4 and uv, which forwards its copy.
    proc, out_path = start_fakestack(tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, out_path.read_text()
    finally:
        stop_fakestack(proc)
    output = out_path.read_text()
    assert "interrupted again" not in output
    assert "did not stop cleanly" not in output
    assert read_lines(tmp_path / "stop-order.log") == STOP_ORDER


def test_a_later_second_ctrl_c_kills_what_is_left(tmp_path: Path) -> None:
    stubborn = fakestack.SERVE.replace(
        "signal.signal(signal.SIGTERM, stop)", "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    )
    proc, out_path = start_fakestack(tmp_path, {"gateway": stubborn})
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(2.5)  # the gateway ignores SIGTERM; gate4 is waiting for it
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, out_path.read_text()
    finally:
        stop_fakestack(proc)
    output = out_path.read_text()
    assert "interrupted again: killing what is left" in output
    assert "gateway did not stop cleanly (killed by SIGKILL)" in output
    assert_all_gone(output, tmp_path / "state")


def test_a_restart_reuses_the_demo_api_key_until_it_is_revoked(tmp_path: Path) -> None:
    """`make run` mints a fresh token each time but keeps the API key it issued before."""
    var_dir = tmp_path / "state"

    def up_and_down() -> tuple[dict[str, str], str]:
        proc, out_path = start_fakestack(tmp_path)
        try:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, out_path.read_text()
        finally:
            stop_fakestack(proc)
        return source_env((var_dir / CREDENTIALS_FILE).read_text()), out_path.read_text()

    first, output = up_and_down()
    assert "new API key" in output
    second, output = up_and_down()
    assert "API key reused" in output
    assert second["API_KEY"] == first["API_KEY"] and second["TOKEN"] != first["TOKEN"]
    settings = Settings(var_dir=var_dir)
    with gateway_keys(settings) as store:
        assert len(store.list_sync("demo")) == 1
        store.revoke_sync(str(api_key_id(first["API_KEY"])))
    third, output = up_and_down()
    assert "new API key" in output and third["API_KEY"] != first["API_KEY"]
    assert lookup_api_key(var_dir, third["API_KEY"]) is not None
    with gateway_keys(settings) as store:
        assert [k.status(datetime.now(UTC)) for k in store.list_sync("demo")] == [
            "revoked",
            "active",
        ]
