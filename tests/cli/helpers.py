"""Helpers shared by the CLI tests."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path

from gateway.apikeys import ApiKeyRecord, ApiKeyStore, open_database
from services.runtime.config import Settings
from services.runtime.resilience import SYSTEM, ManualClock


def lookup_api_key(
    var_dir: Path, plaintext: str, at: datetime | None = None
) -> ApiKeyRecord | None:
    """Looks the key up the way the gateway does, in the gateway database under var_dir, now
    or as a gateway would at a later time `at`."""
    db = open_database(Settings(var_dir=var_dir))
    clock = ManualClock(at) if at is not None else SYSTEM
    try:
        return asyncio.run(ApiKeyStore(db, 0, clock=clock).lookup(plaintext))
    finally:
        db.close()


def stack_pids(output: str) -> list[int]:
    """The pids `gate4 dev up` reported in its progress lines."""
    return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]


def stack_processes(var_dir: Path) -> list[int]:
    """Live processes started for the stack in var_dir (matched by environment, so a reused
    pid of someone else's process is never mistaken for one of ours)."""
    marker = f"GATE4_VAR_DIR={var_dir.resolve()}".encode()
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(proc_dir.name))
    return found
