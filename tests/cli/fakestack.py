"""`gate4 dev up` with stand-in processes, for tests that must not depend on the services.

Each process is a small Python program instead of `python -m services.<name>`; it is ready
once alive and its log says "serving", and the gateway's /readyz wait is skipped. Everything
else (ports check, progress, seeding, credentials file, banner, watching, signals, stop
order) is the real code.
Run as `python -m tests.cli.fakestack <gate4 args>`; FAKESTACK_SCRIPTS (JSON: name -> code) picks
programs, FAKESTACK_ORDER_LOG records the order in which processes got SIGTERM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli import dev
from cli.devstack import ManagedProcess

# Exits 0 on SIGTERM like a real service draining; records when it was asked to stop.
SERVE = """\
import os, signal, sys, time
def stop(*_):
    log = os.environ.get("FAKESTACK_ORDER_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(sys.argv[1] + "\\n")
    time.sleep(0.2)  # draining takes a moment
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("serving", sys.argv[1], flush=True)
while True:
    time.sleep(1)
"""


def scripts() -> dict[str, str]:
    spec: dict[str, str] = json.loads(os.environ.get("FAKESTACK_SCRIPTS", "{}"))
    return spec


def fake_start(self: ManagedProcess) -> None:
    self.log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(self.log_path, "ab")  # noqa: SIM115 - closed by ManagedProcess.stop
    self._log = log
    code = scripts().get(self.name, SERVE)
    self.proc = subprocess.Popen(
        [sys.executable, "-c", code, self.name],
        env=self.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def fake_ready(self: ManagedProcess) -> bool:
    return self.alive() and b"serving" in self.log_path.read_bytes()


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ManagedProcess, "start", fake_start)
    monkeypatch.setattr(ManagedProcess, "ready", fake_ready)
    monkeypatch.setattr(dev, "wait_readyz", lambda stack: None)


def main() -> int:
    from cli.main import main as gate4_main

    patcher = pytest.MonkeyPatch()
    install(patcher)
    return gate4_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
