"""Test-only crash hooks: kill the process at the two moments exactly-once must survive.

- GATE4_FAULT_CRASH_AFTER_COMMIT=SubmitOrder,...: exit right after the command's result and
  its idempotency key committed, before the reply is sent (the retry must replay).
- GATE4_FAULT_CRASH_AFTER_VENUE=SubmitOrder,...: exit right after the venue acknowledged the
  order, before the result was committed (restart must reconcile by client order id).

The exit is os._exit(137), what a SIGKILL looks like to the caller: no cleanup, no reply.
Both hooks are refused when GATE4_ENV=prod.
"""

from __future__ import annotations

import logging
import os

from services.runtime.config import Settings

log = logging.getLogger("gate4.execution.faults")


class CrashHooks:
    def __init__(self, settings: Settings) -> None:
        self.after_commit = _names(settings.fault_crash_after_commit)
        self.after_venue = _names(settings.fault_crash_after_venue)
        if (self.after_commit or self.after_venue) and settings.env == "prod":
            raise RuntimeError("GATE4_FAULT_CRASH_* test hooks are refused when GATE4_ENV=prod")

    def crash_after_commit(self, rpc: str) -> None:
        if rpc in self.after_commit:
            _crash(f"after commit of {rpc}")

    def crash_after_venue(self, rpc: str) -> None:
        if rpc in self.after_venue:
            _crash(f"after venue acknowledged {rpc}")


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def _crash(where: str) -> None:
    log.warning("test crash hook fired", extra={"where": where})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(137)
