"""The deployment lifecycle: pending -> running -> stopping -> stopped, plus failed.

A deployment is created pending and started (running) in the same transaction once risk has
approved it. Stop moves it to stopping while open orders are cancelled (and positions
flattened), then to stopped; a stop that cannot finish (e.g. the flatten could not reach the
venue) ends in failed, from which a new stop may be tried. Anything else is 409
STATE_CONFLICT.
"""

from __future__ import annotations

import json

from services.runtime import errors

PENDING = "pending"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
FAILED = "failed"
STATES = (PENDING, RUNNING, STOPPING, STOPPED, FAILED)

TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({RUNNING, STOPPING, FAILED}),
    RUNNING: frozenset({STOPPING, FAILED}),
    STOPPING: frozenset({STOPPED, FAILED}),
    # A failed stop may be tried again; stopped is final.
    FAILED: frozenset({STOPPING}),
    STOPPED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(deployment_id: str, current: str, target: str) -> None:
    if not can_transition(current, target):
        raise errors.StateConflict(
            f"deployment {deployment_id} is {current}; it cannot become {target}"
        )


def check_accepts_orders(deployment_id: str, state: str) -> None:
    if state != RUNNING:
        raise errors.StateConflict(
            f"deployment {deployment_id} is {state}; orders need a running deployment"
        )


def instruments(stored: str) -> list[str]:
    """The instruments a deployment was created for, from its stored JSON list."""
    return [str(i) for i in json.loads(stored)]
