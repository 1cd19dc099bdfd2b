"""The README's commands work as printed for a newcomer: a clean clone, and no uv on PATH.

The clone holds the files a commit of this tree would hold (tracked and new, nothing
ignored: no .venv, no var/, no generated caches). Its shell's PATH has no uv, like a machine
where `make` has just installed uv into ~/.local/bin, which is not on PATH there. uv's own
package cache is reused, so nothing is downloaded that this machine has already synced.

Every `sh` block of the README runs in order in one bash (`set -euo pipefail`), with two
exceptions said by the commands themselves: `make run` serves until Ctrl-C, so it runs in
the background and the next block starts once the platform answers (as in a second shell);
`make test` and `make fuzz` are the suite this test belongs to, so they are dry-run
(`make -n`) and every uv they would call must exist.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.devstack import PROCESSES, free_port
from tests.docs.runbook import blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The platform's start and its readiness, in seconds (uv sync from the cache, protos, five
#: processes, the demo tenant).
START_TIMEOUT = 300
DROPPED_PREFIXES = ("GATE4_", "PYTEST_", "OTEL_", "UV_")
DROPPED = {"VIRTUAL_ENV", "TOKEN", "API_KEY", "TENANT_ID", "USER_ID", "PLATFORM_API_BASE"}

# Job control gives `make run` a process group of its own: the Ctrl-C that stops it at the end
# reaches make and the platform it started, as it would from a terminal.
RUN_IN_BACKGROUND = f"""
set -m
make run > make-run.log 2>&1 &
MAKE_RUN=$!
echo "$MAKE_RUN" > make-run.pid
set +m
for _ in $(seq {START_TIMEOUT}); do
  if [ -s var/dev-credentials.env ] && grep -q 'Press Ctrl-C' make-run.log; then break; fi
  kill -0 "$MAKE_RUN" 2>/dev/null || {{ cat make-run.log >&2; exit 1; }}
  sleep 1
done
if [ ! -s var/dev-credentials.env ]; then
  echo "make run did not start" >&2; cat make-run.log >&2; exit 1
fi
"""


def clean_clone(destination: Path) -> None:
    """The tree's committable files, as a clone of a commit of it would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the tree but not yet in the index is gone
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def stop_group(pgid: int) -> None:
    """Ctrl-C to a process group still running, then SIGKILL to what outlives 30 s of it."""
    for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def path_without_uv() -> str:
    kept = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    return os.pathsep.join(d for d in kept if not (Path(d) / "uv").exists())


def script(dry_runs: Path) -> str:
    parts = ["set -euo pipefail"]
    for number, block in enumerate(b for b in blocks(README.read_text()) if b.language == "sh"):
        parts.append(f'echo "### README block {number + 1} (line {block.line})" >&2')
        for line in block.text.splitlines():
            command = line.split("#", 1)[0].strip()
            target = re.fullmatch(r"make (\w+)", command)
            if command == "make run":
                parts.append(RUN_IN_BACKGROUND)
            elif target and target.group(1) in ("test", "fuzz"):
                parts.append(f"make -n {target.group(1)} > {dry_runs}/{target.group(1)}.txt")
            else:
                parts.append(line)
    return "\n".join(parts) + "\n"


def test_the_readme_commands_work_from_a_clean_clone_without_uv_on_path(tmp_path: Path) -> None:
    uv = Path.home() / ".local" / "bin" / "uv"
    if not uv.exists() and shutil.which("uv") is None:
        pytest.fail("uv is needed (make installs it into ~/.local/bin)")
    clone = tmp_path / "gate4"
    clean_clone(clone)
    dry_runs = tmp_path / "dry-runs"
    dry_runs.mkdir()

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(DROPPED_PREFIXES) and k not in DROPPED
    }
    env["PATH"] = path_without_uv()
    # The platform on free ports, so the test runs beside a developer's `make run`.
    for name in PROCESSES[:-1]:
        env[f"GATE4_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    env["GATE4_GATEWAY_PORT"] = str(free_port())
    assert shutil.which("uv", path=env["PATH"]) is None

    proc = subprocess.Popen(
        ["bash", "-c", script(dry_runs) + 'kill -INT -- -"$MAKE_RUN"; wait "$MAKE_RUN" || true\n'],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a failure can stop every process the commands started
    )
    try:
        stdout, stderr = proc.communicate(timeout=START_TIMEOUT + 300)
    finally:
        stop_group(proc.pid)
        pid_file = clone / "make-run.pid"
        if pid_file.exists():
            stop_group(int(pid_file.read_text()))
        proc.wait(timeout=60)
    log = clone / "make-run.log"
    assert proc.returncode == 0, (
        f"a README command failed (exit {proc.returncode})\n--- stderr\n{stderr[-4000:]}"
        f"\n--- make run\n{log.read_text()[-4000:] if log.exists() else ''}"
    )

    # The repro answered as printed: a session, then the problem document of a missing id.
    assert '"sessionId"' in stdout and '"channel":"openclaw"' in stdout
    assert '"code":"NOT_FOUND"' in stdout and '"requestId"' in stdout
    # `.venv/bin/gate4` read the demo tenant's policy.
    assert '"schema": "risk-policy.v1"' in stdout or '"schema":"risk-policy.v1"' in stdout
    # The suite's targets name a uv that exists although PATH has none.
    for target in ("test", "fuzz"):
        commands = (dry_runs / f"{target}.txt").read_text().splitlines()
        uvs = {line.split()[0] for line in map(str.strip, commands) if re.match(r"\S*/uv\s", line)}
        assert uvs, commands
        assert all(Path(u).is_file() and os.access(u, os.X_OK) for u in uvs), uvs
