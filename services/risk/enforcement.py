"""Enforcing an engaged kill switch: asking execution to cancel and, when told, flatten.

Risk is the only enforcer: execution never enforces a switch on its own. Once a switch
engages (by hand, or by a drawdown trip recorded during ReportEquity) risk calls
`ExecutionService.EnforceKillSwitch` for that engagement (its `generation`) and records
exactly what execution answered: `enforced` with the ids of the orders it cancelled and
placed to flatten, or `failed` with the reason, audited either way. The switch stays
engaged whatever happens; new orders in scope are refused by the pre-trade gate regardless.

One enforcement per engagement, also with several risk processes on one database: a
process claims the engagement before calling (services.risk.killswitch.claim) and only the
winner calls. Execution is idempotent per (scope, generation): a repeated call answers
with what the first one did, and a repeat while the first is still running fails with
IDEMPOTENCY_IN_PROGRESS; the engagement then stays pending and is asked again later,
when the answer is the stored one. A background loop retries failed enforcements and
pending ones whose caller went away, backing off per engagement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc

from gate4.execution.v1 import execution_pb2
from services.risk import killswitch, locks
from services.runtime import correlation, deadlines, errors
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy, Worker
from services.runtime.storage import Database

if TYPE_CHECKING:
    from gate4.execution.v1.execution_pb2_grpc import ExecutionServiceAsyncStub

log = logging.getLogger("gate4.risk.enforcement")

# Long enough for execution to cancel every open order in scope and flatten positions.
CALL_TIMEOUT_SECONDS = 30.0
#: Retrying unenforced engagements (GATE4_RISK_ENFORCEMENT_RETRY_SECONDS and
#: GATE4_RISK_ENFORCEMENT_MAX_BACKOFF_SECONDS): the loop looks every `initial` seconds; one
#: engagement is asked again after 2 s, 4 s, 8 s ... at most 60 s.
RETRY = RetryPolicy(initial=2.0, multiplier=2.0, max_delay=60.0)
# A pending enforcement older than this lost its caller (the process died): retry it.
PENDING_GRACE = timedelta(seconds=10)
# A claim outlives the call by this much, so recording the answer fits in the lease.
LEASE_MARGIN = timedelta(seconds=10)
IN_PROGRESS = errors.IdempotencyInProgress.code


def _detail(cancelled: list[str], flattened: list[str], flatten: bool) -> str:
    """What execution did, naming every order, as the switch shows it."""
    text = f"execution cancelled {len(cancelled)} open order(s)"
    if cancelled:
        text += f" ({', '.join(cancelled)})"
    if flatten:
        text += f" and placed {len(flattened)} flatten order(s)"
        if flattened:
            text += f" ({', '.join(flattened)})"
    return text


class Enforcer:
    def __init__(
        self,
        db: Database,
        box: Outbox,
        execution: ExecutionServiceAsyncStub,
        *,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        owner: str = "",
        retry: RetryPolicy = RETRY,
        clock: Clock = SYSTEM,
    ) -> None:
        self.db = db
        self.outbox = box
        self.execution = execution
        self.call_timeout = call_timeout
        #: Names this process in the claims it takes.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retry = retry
        self.clock = clock
        self._tasks: set[asyncio.Task[bool]] = set()
        #: The background loop retrying what is due; the service starts and stops it.
        self.retries = Retries(self)
        # Per engagement: failed attempts so far and when to try next (exponential backoff).
        self._backoff: dict[tuple[str, str, str, int], tuple[int, float]] = {}

    async def enforce(self, job: killswitch.Enforcement, *, within: float | None = None) -> bool:
        """One attempt for one engagement, when this process wins its claim; the outcome is
        stored and audited, never raised. Returns whether execution was called.

        `within` shortens the call (an engage answering its own caller in time); the
        claim is always for the full call timeout, since execution carries on regardless.
        """
        lease = timedelta(seconds=self.call_timeout) + LEASE_MARGIN
        try:
            claimed = await locks.retry(
                lambda: self.db.write(
                    lambda c: killswitch.claim(
                        c, job, owner=self.owner, now=self.clock.now(), lease=lease
                    )
                )
            )
        except Exception:  # the loop retries; nothing was asked of execution
            log.exception("could not claim a kill-switch enforcement")
            return False
        if not claimed:
            return False
        request = execution_pb2.EnforceKillSwitchRequest(
            scope=job.scope,
            scope_id=job.scope_id,
            flatten=job.flatten,
            reason=job.reason,
            generation=job.generation,
        )
        data: dict[str, Any]
        timeout = min(within or self.call_timeout, self.call_timeout)
        try:
            reply = await self.execution.EnforceKillSwitch(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_peer("execution", exc)
            code = error.error_code()
            data = {"code": code}
            # Cut short by our own caller's deadline, execution carries on: not a failure.
            cut_short = (
                timeout < self.call_timeout and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            )
            if code == IN_PROGRESS or cut_short:
                status = killswitch.PENDING
                detail = (
                    f"execution is still enforcing generation {job.generation}; risk asks "
                    "again for its answer"
                )
            else:
                status = killswitch.FAILED
                detail = (
                    f"execution could not enforce the kill switch ({code}: {error.detail}); "
                    "the switch stays engaged and risk retries"
                )
        else:
            cancelled, flattened = list(reply.cancelled_order_ids), list(reply.flatten_order_ids)
            status = killswitch.ENFORCED
            detail = _detail(cancelled, flattened, job.flatten)
            data = {"cancelledOrderIds": cancelled, "flattenOrderIds": flattened}
        try:
            await locks.retry(
                lambda: self.db.write(
                    lambda c: killswitch.record_enforcement(
                        c,
                        self.outbox,
                        job,
                        status=status,
                        detail=detail,
                        data=data,
                        owner=self.owner,
                        now=self.clock.now(),
                    )
                )
            )
            self.outbox.notify()
        except Exception:  # the claim lapses and the loop asks again: execution has the answer
            log.exception("could not record kill-switch enforcement")
        return True

    def enforce_later(self, job: killswitch.Enforcement) -> None:
        """Enforces in the background, so the caller (execution's ReportEquity) is answered
        first and never waits on a call back into itself. The enforcement outlives that
        call, so it does not inherit its deadline."""
        with deadlines.unbounded():
            task = asyncio.create_task(self.enforce(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- retries ---------------------------------------------------------------------------

    async def cancel_background(self) -> None:
        """Ends the enforcements still running in the background (shutting down: the
        claims lapse and the next process to retry asks execution for the answer)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def retry_once(self, *, force: bool = False) -> int:
        """Retries every unenforced engagement that is due; returns how many it tried."""
        now = self.clock.now()
        jobs = await self.db.read(lambda c: killswitch.unenforced(c, now - PENDING_GRACE, now))
        clock = self.clock.monotonic()
        due = {(j.tenant_id, j.scope, j.scope_id, j.generation): j for j in jobs}
        self._backoff = {k: v for k, v in self._backoff.items() if k in due}
        tried = 0
        for key, job in due.items():
            failures, next_at = self._backoff.get(key, (0, 0.0))
            if not force and clock < next_at:
                continue
            corr = correlation.Correlation(
                request_id=job.request_id or correlation.new_request_id(), tenant_id=job.tenant_id
            )
            with correlation.bound(corr):
                called = await self.enforce(job)
            if not called:
                continue  # another process holds it, or it is done
            tried += 1
            failures += 1
            self._backoff[key] = (failures, self.clock.monotonic() + self.retry.delay(failures))
        return tried


class Retries(Worker):
    """Retries what is due every `retry.initial` seconds; stopping it also ends the
    enforcements still running in the background."""

    def __init__(self, enforcer: Enforcer) -> None:
        super().__init__(
            "risk-enforcement-retries",
            interval=enforcer.retry.initial,
            clock=enforcer.clock,
            wait_first=True,
            logger=log,
        )
        self.enforcer = enforcer

    async def step(self) -> bool:
        await self.enforcer.retry_once()
        return False

    async def stopped(self) -> None:
        await self.enforcer.cancel_background()
