"""Enforcing an engaged kill switch: asking execution to cancel and, when told, flatten.

Risk calls `ExecutionService.EnforceKillSwitch` once a switch engages (by hand, or by a
drawdown trip recorded during ReportEquity) and records the result for that engagement:
`enforced`, or `failed` with the reason, audited either way. The switch stays engaged
whatever happens; new orders in scope are refused by the pre-trade gate regardless. A
background loop retries failed enforcements (and ones left pending by a process that
died), so open orders are cancelled once execution is reachable again. Execution's
enforcement is idempotent (a second call finds nothing left to cancel), so retries and
two risk processes retrying the same switch are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc

from gate4.execution.v1 import execution_pb2
from services.risk import killswitch
from services.runtime import correlation, errors
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow

if TYPE_CHECKING:
    from gate4.execution.v1.execution_pb2_grpc import ExecutionServiceAsyncStub

log = logging.getLogger("gate4.risk.enforcement")

# An engage answers within this; a slower execution is left to the retry loop.
CALL_TIMEOUT_SECONDS = 2.0
RETRY_INTERVAL_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 60.0
# A pending enforcement older than this lost its caller (the process died): retry it.
PENDING_GRACE = timedelta(seconds=10)


class Enforcer:
    def __init__(self, db: Database, box: Outbox, execution: ExecutionServiceAsyncStub) -> None:
        self.db = db
        self.outbox = box
        self.execution = execution
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        # Per engagement: failed attempts so far and when to try next (exponential backoff).
        self._backoff: dict[tuple[str, str, str, int], tuple[int, float]] = {}

    async def enforce(self, job: killswitch.Enforcement) -> None:
        """One attempt for one engagement; its outcome is stored and audited, never raised."""
        request = execution_pb2.EnforceKillSwitchRequest(
            scope=job.scope, scope_id=job.scope_id, flatten=job.flatten, reason=job.reason
        )
        data: dict[str, Any]
        try:
            reply = await self.execution.EnforceKillSwitch(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            detail = (
                f"execution could not enforce the kill switch ({error.error_code()}: "
                f"{error.detail}); the switch stays engaged and risk retries"
            )
            ok, data = False, {"code": error.error_code()}
        else:
            cancelled, flattened = list(reply.cancelled_order_ids), list(reply.flatten_order_ids)
            detail = f"execution cancelled {len(cancelled)} open order(s)" + (
                f" and placed {len(flattened)} flatten order(s)" if job.flatten else ""
            )
            ok, data = True, {"cancelledOrderIds": cancelled, "flattenOrderIds": flattened}
        try:
            await self.db.write(
                lambda c: killswitch.record_enforcement(
                    c, self.outbox, job, ok=ok, detail=detail, data=data
                )
            )
            self.outbox.notify()
        except Exception:  # the loop retries; nothing is lost but this attempt's record
            log.exception("could not record kill-switch enforcement")

    def enforce_later(self, job: killswitch.Enforcement) -> None:
        """Enforces in the background, so the caller (execution's ReportEquity) is answered
        first and never waits on a call back into itself."""
        task = asyncio.create_task(self.enforce(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- retries ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._retry_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = None

    async def retry_once(self, *, force: bool = False) -> int:
        """Retries every unenforced engagement that is due; returns how many it tried."""
        jobs = await self.db.read(lambda c: killswitch.unenforced(c, utcnow() - PENDING_GRACE))
        now = time.monotonic()
        due = {(j.tenant_id, j.scope, j.scope_id, j.generation): j for j in jobs}
        self._backoff = {k: v for k, v in self._backoff.items() if k in due}
        tried = 0
        for key, job in due.items():
            failures, next_at = self._backoff.get(key, (0, 0.0))
            if not force and now < next_at:
                continue
            corr = correlation.Correlation(
                request_id=job.request_id or correlation.new_request_id(), tenant_id=job.tenant_id
            )
            with correlation.bound(corr):
                await self.enforce(job)
            tried += 1
            delay = min(RETRY_INTERVAL_SECONDS * 2**failures, MAX_BACKOFF_SECONDS)
            self._backoff[key] = (failures + 1, time.monotonic() + delay)
        return tried

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL_SECONDS)
            try:
                await self.retry_once()
            except Exception:
                log.exception("kill-switch enforcement retry failed")
