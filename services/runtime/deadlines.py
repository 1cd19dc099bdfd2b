"""Deadline budgets: every hop passes on what is left of its caller's deadline.

The server interceptor binds the budget of each call it serves: gRPC's remaining time,
and the absolute deadline the caller stamped in `x-gate4-deadline`, so a call that waited
in the socket of a paused process does not start afresh once the process resumes (its
caller gave up long ago). Every call made while serving it gets `min(its own timeout,
remaining - margin)`: the innermost hop times out first, and its error (a hung risk is
RISK_UNAVAILABLE) is what the client sees, with time left to record and answer it.

Work that outlives its caller (a stop answered with 202, an enforcement in the
background) detaches from the budget and runs under the plain per-dependency timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

#: The shortest timeout an outgoing call gets once the budget is spent: it fails at once.
SPENT = 0.001


@dataclass
class Budget:
    """The deadline of the call being served, on the monotonic clock; None: unbounded."""

    deadline: float | None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def detach(self) -> None:
        """From now on the work sharing this budget runs without its caller's deadline."""
        self.deadline = None


_budget: ContextVar[Budget | None] = ContextVar("gate4_budget", default=None)


def current() -> Budget | None:
    return _budget.get()


def remaining() -> float | None:
    """Seconds left of the caller's deadline; None outside a call or without one."""
    budget = _budget.get()
    return None if budget is None else budget.remaining()


@contextmanager
def bound(seconds: float | None) -> Iterator[Budget]:
    """Binds a budget of `seconds` (None: unbounded) for the block."""
    budget = Budget(None if seconds is None else time.monotonic() + seconds)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """No budget for the block: tasks started in it do not inherit the caller's deadline."""
    token = _budget.set(None)
    try:
        yield
    finally:
        _budget.reset(token)


def outgoing(timeout: float | None, margin: float) -> float | None:
    """The timeout of a call made now: its own, capped by the budget less the margin."""
    left = remaining()
    if left is None:
        return timeout
    cap = max(left - margin, SPENT)
    return cap if timeout is None else min(timeout, cap)


def stamp(timeout: float) -> str:
    """The absolute deadline of a call with this timeout, as sent in `x-gate4-deadline`."""
    return f"{time.time() + timeout:.3f}"


def incoming(time_remaining: float | None, stamped: str) -> float | None:
    """The budget of a call being served: gRPC's remaining time, shortened by the caller's
    stamped absolute deadline when that is earlier. Negative: the caller already gave up."""
    left = time_remaining
    try:
        absolute = float(stamped) - time.time() if stamped else None
    except ValueError:
        absolute = None
    if absolute is not None:
        left = absolute if left is None else min(left, absolute)
    return left
