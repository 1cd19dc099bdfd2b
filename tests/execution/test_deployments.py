"""The deployment state machine."""

from __future__ import annotations

import pytest

from services.execution import deployments as d
from services.runtime import errors


@pytest.mark.parametrize(
    "current,target",
    [
        ("pending", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
        ("stopping", "failed"),
        ("failed", "stopping"),
        ("pending", "stopping"),
    ],
)
def test_legal_transitions(current: str, target: str) -> None:
    d.check_transition("dep_1", current, target)


@pytest.mark.parametrize(
    "current,target",
    [
        ("stopped", "stopping"),
        ("stopped", "running"),
        ("running", "pending"),
        ("running", "stopped"),
    ],
)
def test_illegal_transitions_are_state_conflicts(current: str, target: str) -> None:
    with pytest.raises(errors.StateConflict):
        d.check_transition("dep_1", current, target)


def test_only_running_deployments_take_orders() -> None:
    d.check_accepts_orders("dep_1", "running")
    for state in ("pending", "stopping", "stopped", "failed"):
        with pytest.raises(errors.StateConflict):
            d.check_accepts_orders("dep_1", state)
