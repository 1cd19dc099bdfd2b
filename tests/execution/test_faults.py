"""The test-only crash hooks never run in production."""

from __future__ import annotations

import pytest

from services.execution.faults import CrashHooks
from services.runtime.config import Settings


def test_crash_hooks_are_refused_in_production() -> None:
    with pytest.raises(RuntimeError, match="refused when GATE4_ENV=prod"):
        CrashHooks(Settings(env="prod", fault_crash_after_commit="SubmitOrder"))
    CrashHooks(Settings(env="prod"))  # no hook, no problem


def test_hooks_fire_only_for_the_named_rpcs(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr("services.execution.faults.os._exit", exits.append)
    hooks = CrashHooks(Settings(fault_crash_after_commit="SubmitOrder, StopDeployment"))
    hooks.crash_after_commit("CreateDeployment")
    hooks.crash_after_venue("SubmitOrder")
    assert exits == []
    hooks.crash_after_commit("StopDeployment")
    assert exits == [137]


def test_the_idempotency_ttl_cannot_go_below_a_day() -> None:
    with pytest.raises(ValueError):
        Settings(execution_idempotency_ttl_seconds=3600)
