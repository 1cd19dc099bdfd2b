"""The ExecutionService RPCs: input checks and the idempotency envelope around the commands.

A keyed command first claims its key (see idempotency.py; an order's new key is written
with the order). A stored result is replayed with
initial metadata `x-idempotent-replayed: true` (the gateway turns it into the
`Idempotent-Replayed` header), a stored refusal is raised again, and both are audited as
`command.replayed`. Otherwise the command runs; if it fails before any side effect and
without settling the key itself, the key is released so a retry can run.

Commands run to their end even when their caller leaves (`_shielded`). A stop answers
within its caller's deadline: when it is still at work by then (flattening while risk
hangs, say), it answers with the deployment as it stands, `stopping`, and initial metadata
`x-gate4-accepted: true` (the gateway's 202), and finishes on its own time; its key then
completes with the final result, which a retry with the same key gets.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpc import aio

from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from services.execution import deployments, idempotency, orders, store
from services.execution.flows import Flows
from services.execution.idempotency import (
    ROUTE_CREATE,
    ROUTE_ENFORCE,
    ROUTE_STOP,
    ROUTE_SUBMIT,
    Claim,
    Progress,
    Stored,
)
from services.execution.orders import Intent
from services.execution.unitofwork import Work, new_id
from services.runtime import correlation, deadlines, errors, metrics, outcomes, scopes
from services.runtime.config import Settings
from services.runtime.idempotency import KeyPolicy
from services.runtime.metadata import ACCEPTED_FLAG, REPLAYED_FLAG
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc
from services.runtime.validation import IDEMPOTENCY_KEY_RE, Checker

Context = aio.ServicerContext[object, object]
M = TypeVar("M", bound=Message)
T = TypeVar("T")
log = logging.getLogger("gate4.execution")

CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MODES = ("paper",)
SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
MAX_PAGE = 500
MAX_REASON = 500


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        db: Database,
        flows: Flows,
        settings: Settings,
        *,
        deadline_margin: float = 0.5,
    ) -> None:
        self.db = db
        self.flows = flows
        self.uow = flows.uow
        #: The time keys are judged and claimed at, and unstamped marks are taken at.
        self.clock = flows.clock
        self.settings = settings
        #: Time kept back from the caller's deadline to answer it.
        self.deadline_margin = deadline_margin

    # -- the idempotency envelope ------------------------------------------------------------

    async def _keyed(
        self,
        context: Context,
        route: str,
        request: Message,
        key: str,
        resource_id: str,
        reply_type: type[M],
        run: Callable[[str, Claim | None, Progress], Coroutine[Any, Any, M]],
        accepted: Callable[[], Awaitable[M]] | None = None,
    ) -> M:
        """Runs a command under its key. With `accepted`, the command answers within its
        caller's deadline: once begun and still running then, with what `accepted` reads."""
        tenant = correlation.current().tenant_id
        progress = Progress()
        if not key:
            if accepted is not None:
                return await self._in_time(
                    context, run(resource_id, None, progress), progress, accepted, ()
                )
            return await _shielded(run(resource_id, None, progress))
        key_args: dict[str, Any] = {
            "tenant_id": tenant,
            "route": route,
            "key": key,
            "digest": idempotency.request_digest(request),
            "resource_id": resource_id,
            "policy": KeyPolicy.of(self.settings),
        }
        try:
            # An order's new key is written with the order itself (idempotency.lookup).
            found = (
                await self.uow.db.read(
                    lambda c: idempotency.lookup(c, now=self.clock.now(), **key_args)
                )
                if route == ROUTE_SUBMIT
                else None
            )
            claimed = (
                found
                if found is not None
                else await self.uow.run(
                    lambda w: idempotency.claim(w.conn, now=self.clock.now(), **key_args)
                )
            )
        except (errors.IdempotencyKeyReused, errors.IdempotencyInProgress) as exc:
            await self._key_refused(route, request, exc)
            raise
        metrics.idempotency_claimed(route, claimed)
        if isinstance(claimed, Stored):
            await self._replayed(route, claimed, reply_type)
            await context.send_initial_metadata(REPLAYED_FLAG)
            if claimed.response is None:
                raise claimed.error()
            return reply_type.FromString(claimed.response)

        async def attempt() -> M:
            try:
                return await run(claimed.resource_id, claimed, progress)
            except BaseException:
                if not progress.started and not progress.settled:
                    await self.uow.run(lambda w: idempotency.release(w.conn, tenant, claimed))
                raise

        # A resumed key's result belongs to the attempt that first held it.
        replayed = REPLAYED_FLAG if claimed.resumed else ()
        if accepted is not None:
            return await self._in_time(context, attempt(), progress, accepted, replayed)
        reply = await _shielded(attempt())
        if replayed:
            await context.send_initial_metadata(replayed)
        return reply

    async def _in_time(
        self,
        context: Context,
        work: Coroutine[Any, Any, M],
        progress: Progress,
        accepted: Callable[[], Awaitable[M]],
        metadata: tuple[tuple[str, str], ...],
    ) -> M:
        """The command's reply if it ends before the caller's deadline (less the margin);
        else, once it has begun, `accepted()` marked as accepted, while it runs on."""
        task = asyncio.ensure_future(work)
        left = deadlines.remaining()
        wait = None if left is None else max(left - self.deadline_margin, 0.0)
        try:
            await asyncio.wait({task}, timeout=wait)
            # Past the deadline and not begun yet: the steps before the command begins are
            # bounded by the same deadline, so this wait is short.
            while not task.done() and not progress.started:
                await asyncio.wait({task}, timeout=self.settings.execution_stop_poll_seconds)
            if not task.done():
                reply = await accepted()
        except BaseException:  # the caller left, or the read failed: the command runs on
            task.add_done_callback(_after_caller_left)
            raise
        if task.done():
            reply = task.result()
            if metadata:
                await context.send_initial_metadata(metadata)
            return reply
        # The rest of the command is no longer bound by this caller's deadline: it gets the
        # usual per-dependency timeouts, and its outcome is logged (and stored with its key).
        budget = deadlines.current()
        if budget is not None:
            budget.detach()
        task.add_done_callback(_after_caller_left)
        await context.send_initial_metadata((*metadata, *ACCEPTED_FLAG))
        return reply

    async def _key_refused(self, route: str, request: Message, error: errors.Gate4Error) -> None:
        """A retry refused for its key (reused with another payload, or still running)."""
        deployment_id = str(getattr(request, "deployment_id", ""))

        def op(work: Work) -> None:
            work.note(
                "command.rejected",
                outcome=error.error_code(),
                reason=error.detail,
                deployment_id=deployment_id,
                data={"route": route},
            )

        await self.uow.run(op)

    async def _replayed(self, route: str, stored: Stored, reply_type: type[Message]) -> None:
        ids = {"order_id" if route == ROUTE_SUBMIT else "deployment_id": stored.resource_id}
        if route == ROUTE_ENFORCE:
            ids = {}
        policy_version = ""
        if stored.response is not None:
            # The replayed reply names the ids and policy version of the original decision.
            reply = reply_type.FromString(stored.response)
            policy_version = str(getattr(reply, "policy_version", ""))
            for field in ("account_id", "deployment_id"):
                ids[field] = str(getattr(reply, field, "")) or ids.get(field, "")

        def op(work: Work) -> None:
            work.note(
                "command.replayed",
                outcome=stored.error_code or outcomes.REPLAYED,
                reason=stored.error_detail,
                policy_version=policy_version,
                data={"route": route, "errorOutcome": stored.error_outcome},
                **ids,
            )

        await self.uow.run(op)

    # -- deployments -------------------------------------------------------------------------

    async def CreateDeployment(
        self, request: execution_pb2.CreateDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        if not request.idempotency_key:
            raise errors.IdempotencyKeyRequired("creating a deployment needs an idempotency key")
        check = Checker()
        _check_key(check, request.idempotency_key)
        check.id("strategyId", request.strategy_id)
        check.id("accountId", request.account_id)
        if not request.instruments:
            check.fail("instruments", "at least one instrument")
        if len(set(request.instruments)) != len(request.instruments):
            check.fail("instruments", "each instrument once")
        for i, instrument in enumerate(request.instruments):
            check.instrument(f"instruments[{i}]", instrument)
        check.decimal("capitalAllocation", request.capital_allocation)
        check.one_of("mode", request.mode or "paper", MODES)
        check.done("invalid deployment")
        # "mode" omitted and "mode": "paper" are the same command.
        normalised = execution_pb2.CreateDeploymentRequest()
        normalised.CopyFrom(request)
        normalised.mode = request.mode or "paper"
        return await self._keyed(
            context,
            ROUTE_CREATE,
            normalised,
            request.idempotency_key,
            new_id("dep"),
            execution_pb2.Deployment,
            lambda rid, claim, progress: self.flows.deployments.create(
                normalised, rid, claim, progress
            ),
        )

    async def GetDeployment(
        self, request: execution_pb2.GetDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        return await self.flows.deployments.get(request.deployment_id)

    async def ListDeployments(
        self, request: execution_pb2.ListDeploymentsRequest, context: Context
    ) -> execution_pb2.ListDeploymentsResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        limit = check.limit("limit", request.limit, default=100, maximum=MAX_PAGE)
        if request.state:
            check.one_of("state", request.state, deployments.STATES)
        check.id("accountId", request.account_id, required=False)
        after = check.newest_first_cursor("cursor", request.cursor)
        check.done()
        items = await self.db.read(
            lambda c: store.list_deployments(
                c, tenant, request.account_id, request.state, after, limit + 1
            )
        )
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if more else None
        return execution_pb2.ListDeploymentsResponse(
            deployments=items,
            next_cursor=store.page_cursor(last.created_at, last.deployment_id) if last else "",
        )

    async def StopDeployment(
        self, request: execution_pb2.StopDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        check = Checker()
        check.id("deploymentId", request.deployment_id)
        if request.idempotency_key:
            _check_key(check, request.idempotency_key)
        check.text("reason", request.reason, max_length=MAX_REASON)
        check.done("invalid stop")
        return await self._keyed(
            context,
            ROUTE_STOP,
            request,
            request.idempotency_key,
            request.deployment_id,
            execution_pb2.Deployment,
            lambda _rid, claim, progress: self.flows.deployments.stop(request, claim, progress),
            accepted=lambda: self.flows.deployments.get(request.deployment_id),
        )

    # -- orders ------------------------------------------------------------------------------

    async def SubmitOrder(
        self, request: execution_pb2.SubmitOrderRequest, context: Context
    ) -> execution_pb2.Order:
        if not request.idempotency_key:
            raise errors.IdempotencyKeyRequired("submitting an order needs an idempotency key")
        check = Checker()
        check.id("deploymentId", request.deployment_id)
        check.instrument("instrument", request.instrument)
        check.one_of("side", request.side, SIDES)
        check.one_of("type", request.type, ORDER_TYPES)
        quantity = check.decimal("quantity", request.quantity)
        limit_price = check.decimal(
            "limitPrice", request.limit_price, required=request.type == "limit"
        )
        if request.type == "market" and request.limit_price:
            check.fail("limitPrice", "only limit orders have a limit price")
        if request.client_order_id and not CLIENT_ORDER_ID_RE.match(request.client_order_id):
            check.fail("clientOrderId", "1-64 characters of A-Z a-z 0-9 . _ : -")
        _check_key(check, request.idempotency_key)
        check.done("invalid order")
        assert quantity is not None
        intent = Intent(
            deployment_id=request.deployment_id,
            instrument=request.instrument,
            side=request.side,
            type=request.type,
            quantity=quantity,
            limit_price=limit_price,
            reduce_only=request.reduce_only,
            client_order_id=request.client_order_id,
        )
        return await self._keyed(
            context,
            ROUTE_SUBMIT,
            request,
            request.idempotency_key,
            new_id("ord"),
            execution_pb2.Order,
            lambda rid, claim, progress: self.flows.orders.submit(intent, rid, claim, progress),
        )

    async def GetOrder(
        self, request: execution_pb2.GetOrderRequest, context: Context
    ) -> execution_pb2.Order:
        return await self.flows.orders.get(request.order_id)

    async def ListOrders(
        self, request: execution_pb2.ListOrdersRequest, context: Context
    ) -> execution_pb2.ListOrdersResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        limit = check.limit("limit", request.limit, default=100, maximum=MAX_PAGE)
        if request.status:
            check.one_of("status", request.status, orders.STATUSES)
        check.id("deploymentId", request.deployment_id, required=False)
        after = check.newest_first_cursor("cursor", request.cursor)
        check.done()
        items = await self.db.read(
            lambda c: store.list_orders(
                c, tenant, request.deployment_id, request.status, after, limit + 1
            )
        )
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if more else None
        return execution_pb2.ListOrdersResponse(
            orders=items,
            next_cursor=store.page_cursor(last.created_at, last.order_id) if last else "",
        )

    async def CancelOrder(
        self, request: execution_pb2.CancelOrderRequest, context: Context
    ) -> execution_pb2.Order:
        check = Checker()
        check.id("orderId", request.order_id)
        check.text("reason", request.reason, max_length=MAX_REASON)
        check.done("invalid cancel")
        return await _shielded(self.flows.orders.cancel(request.order_id, request.reason))

    # -- sandbox and kill switch -------------------------------------------------------------

    async def FeedMarks(
        self, request: execution_pb2.FeedMarksRequest, context: Context
    ) -> execution_pb2.FeedMarksResponse:
        check = Checker()
        if not 1 <= len(request.marks) <= MAX_PAGE:
            check.fail("marks", f"between 1 and {MAX_PAGE} marks")
        for i, mark in enumerate(request.marks):
            check.instrument(f"marks[{i}].instrument", mark.instrument)
            check.decimal(f"marks[{i}].price", mark.price)
        check.done("invalid marks")
        now = self.clock.now()
        marks = [
            (
                m.instrument,
                _plain(m.price),
                as_utc(m.at.ToDatetime()) if m.HasField("at") else now,
            )
            for m in request.marks
        ]
        accepted, fills = await _shielded(self.flows.marks.feed(marks))
        return execution_pb2.FeedMarksResponse(accepted=accepted, fills=fills)

    async def EnforceKillSwitch(
        self, request: execution_pb2.EnforceKillSwitchRequest, context: Context
    ) -> execution_pb2.EnforceKillSwitchResponse:
        check = Checker()
        check.one_of("scope", request.scope, scopes.SCOPES)
        check.text("scopeId", request.scope_id, max_length=64, required=True)
        check.text("reason", request.reason, max_length=MAX_REASON)
        if request.generation < 0:
            check.fail("generation", "an engagement generation, 1 or more")
        check.done("invalid kill-switch enforcement")
        # One engagement is enforced once: a repeat answers with what the first call did.
        key = (
            f"killswitch:{request.scope}:{request.scope_id}:{request.generation}"
            if request.generation
            else ""
        )
        return await self._keyed(
            context,
            ROUTE_ENFORCE,
            request,
            key,
            request.scope_id,
            execution_pb2.EnforceKillSwitchResponse,
            lambda _rid, claim, progress: self.flows.kill_switches.enforce(
                request, claim, progress
            ),
        )

    async def GetSettlements(
        self, request: execution_pb2.GetSettlementsRequest, context: Context
    ) -> execution_pb2.GetSettlementsResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        if not 1 <= len(request.order_ids) <= MAX_PAGE:
            check.fail("orderIds", f"between 1 and {MAX_PAGE} order ids")
        for i, order_id in enumerate(request.order_ids):
            check.id(f"orderIds[{i}]", order_id)
        check.done("invalid settlement lookup")
        order_ids = list(request.order_ids)
        return await self.db.read(lambda c: orders.settlements_for(c, tenant, order_ids))


async def _shielded(work: Coroutine[Any, Any, T]) -> T:
    """Runs a command to its end even if the caller goes away (deadline, disconnect): a
    command cancelled half-way would leave a pending order for reconciliation to settle."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_after_caller_left)
        raise


def _after_caller_left(task: asyncio.Future[Any]) -> None:
    """Logs, once, how a command ended that its caller did not wait for. (An answer the
    caller got is logged by the server interceptor: its code on the `rpc` line, and the
    traceback of an unexpected error.) A refusal is no crash: no traceback for it."""
    if task.cancelled():
        log.warning("command cancelled after its caller left")
        return
    error = task.exception()
    if error is None:
        log.info("command finished after its caller left")
    elif isinstance(error, errors.Gate4Error):
        level = logging.WARNING if error.status_for_http() >= 500 else logging.INFO
        log.log(
            level,
            "command refused after its caller left",
            extra={"code": error.error_code(), "detail": error.detail},
        )
    else:
        log.error("command failed after its caller left", exc_info=error)


def _check_key(check: Checker, key: str) -> None:
    if not IDEMPOTENCY_KEY_RE.match(key):
        check.fail("idempotencyKey", "8-255 characters of A-Z a-z 0-9 . _ : -")


def _plain(price: str) -> str:
    return format(Decimal(price), "f")
