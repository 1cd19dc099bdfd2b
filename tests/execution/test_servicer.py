"""Commands run to their end when their caller leaves, and how they ended is logged once:
an answer the caller got is the interceptor's to log; one nobody got is logged here, a
refusal without a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from services.execution.servicer import _shielded
from services.runtime import errors

Outcome = Callable[[], Coroutine[Any, Any, str]]


async def _refused() -> str:
    await asyncio.sleep(0.05)
    raise errors.StateConflict("deployment dep_1 is already stopping")


async def _unavailable() -> str:
    await asyncio.sleep(0.05)
    raise errors.DependencyUnavailable("the venue did not confirm the cancel")


async def _crashed() -> str:
    await asyncio.sleep(0.05)
    raise RuntimeError("bug")


async def _finished() -> str:
    await asyncio.sleep(0.05)
    return "done"


def _caller_leaves(outcome: Outcome) -> None:
    async def scenario() -> None:
        caller: asyncio.Future[str] = asyncio.ensure_future(_shielded(outcome()))
        await asyncio.sleep(0.01)
        caller.cancel()  # the RPC's deadline, or the client went away
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.1)  # the command runs on to its end

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("outcome", "level", "code"),
    [
        (_refused, logging.INFO, "STATE_CONFLICT"),
        (_unavailable, logging.WARNING, "DEPENDENCY_UNAVAILABLE"),
    ],
)
def test_a_refusal_nobody_waited_for_is_logged_once_without_a_traceback(
    outcome: Outcome, level: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(outcome)
    (record,) = caplog.records
    assert record.getMessage() == "command refused after its caller left"
    assert (record.levelno, record.code, record.exc_info) == (level, code, None)  # type: ignore[attr-defined]


def test_a_crash_nobody_waited_for_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(_crashed)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_command_that_ends_after_its_caller_left_is_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(_finished)
    assert [r.getMessage() for r in caplog.records] == ["command finished after its caller left"]


def test_an_answer_the_caller_got_is_not_logged_here(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with pytest.raises(errors.StateConflict):
            await _shielded(_refused())
        assert await _shielded(_finished()) == "done"

    with caplog.at_level(logging.DEBUG, logger="gate4.execution"):
        asyncio.run(scenario())
    assert caplog.records == []
