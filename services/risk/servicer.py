"""The RiskService RPCs: input checks, roles and transactions around the domain modules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2
from grpc import aio
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.risk import (
    checks,
    drawdown,
    killswitch,
    locks,
    policy,
    pretrade,
    settlement,
    versions,
)
from services.risk.books import Books
from services.risk.enforcement import Enforcer
from services.runtime import correlation, deadlines, errors, outbox, outcomes, roles, scopes
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc, to_timestamp
from services.runtime.validation import Checker

log = logging.getLogger("gate4.risk")
T = TypeVar("T")

Context = aio.ServicerContext[object, object]
# A page of versions, as for every list of the API: 1..500, 100 when not asked.
DEFAULT_VERSIONS = 100
MAX_VERSIONS = 500
REASON_MAX = 500
# Seconds an engage keeps for reading and answering after its inline enforcement.
ANSWER_MARGIN = 1.0


def _policy_message(record: versions.PolicyRecord) -> risk_pb2.PolicyVersion:
    msg = risk_pb2.PolicyVersion(
        tenant_id=record.tenant_id,
        account_id=record.account_id,
        version=record.version,
        digest=record.digest,
        author=record.author,
        reason=record.reason,
        active=record.active,
    )
    doc = struct_pb2.Struct()
    doc.update(record.document)
    msg.policy.CopyFrom(doc)
    created = to_timestamp(record.created_at)
    if created is not None:
        msg.created_at.CopyFrom(created)
    return msg


def _require_role(role: str, action: str) -> None:
    """Services re-check what the gateway checked: an internal caller is no exception, and
    the change is made by a named user, whom the audit trail records."""
    corr = correlation.current()
    if role not in corr.roles or not corr.user_id:
        raise errors.Forbidden(f"a user with role {role} is required to {action}")


def _reason(value: str) -> str:
    check = Checker()
    check.text("reason", value, max_length=REASON_MAX, required=True)
    check.done("a reason is required")
    return value.strip()


def _signed(check: Checker, field: str, value: str, *, required: bool) -> Decimal:
    if not value:
        if required:
            check.fail(field, "required")
        return Decimal(0)
    try:
        number = Decimal(value)
    except ArithmeticError:
        number = Decimal("NaN")
    if not number.is_finite():
        check.fail(field, 'a signed decimal written as a string, e.g. "-12.5"')
        return Decimal(0)
    return number


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(
        self,
        db: Database,
        box: Outbox,
        enforcer: Enforcer,
        *,
        clock: Clock = SYSTEM,
        books: Books | None = None,
    ) -> None:
        self.db = db
        self.outbox = box
        self.enforcer = enforcer
        #: The accounts' decision state in memory (services.risk.books), shared with the
        #: process's other writers of it.
        self.books = books if books is not None else Books()
        #: The time decisions (the order-rate window), equity reports and settlements are at.
        self.clock = clock

    async def _serialised(self, op: Callable[[Connection], T]) -> T:
        """A write op that takes a lock (services.risk.locks), retried while contended."""
        try:
            return await locks.retry(lambda: self.db.write(op))
        except locks.Contended:
            raise errors.DependencyUnavailable(
                "another risk process keeps this tenant's risk state busy; retry shortly"
            ) from None

    # -- policy ----------------------------------------------------------------------------

    async def GetPolicy(
        self, request: risk_pb2.GetPolicyRequest, context: Context
    ) -> risk_pb2.PolicyVersion:
        tenant = correlation.current().tenant_id
        record = await self.db.read(lambda c: versions.active_policy(c, tenant, request.account_id))
        if record is None:
            raise errors.NotFound(
                "no risk policy is active for this tenant; put a risk-policy.v1 document"
            )
        return _policy_message(record)

    async def ListPolicyVersions(
        self, request: risk_pb2.ListPolicyVersionsRequest, context: Context
    ) -> risk_pb2.ListPolicyVersionsResponse:
        tenant = correlation.current().tenant_id
        limit = request.limit or DEFAULT_VERSIONS
        if not 1 <= limit <= MAX_VERSIONS:
            raise errors.ValidationFailed(
                "limit out of range",
                field_errors=[errors.FieldError("limit", f"1..{MAX_VERSIONS}")],
            )
        records = await self.db.read(
            lambda c: versions.list_versions(c, tenant, request.account_id, limit)
        )
        return risk_pb2.ListPolicyVersionsResponse(versions=[_policy_message(r) for r in records])

    async def ValidatePolicy(
        self, request: risk_pb2.ValidatePolicyRequest, context: Context
    ) -> risk_pb2.ValidatePolicyResponse:
        document = json_format.MessageToDict(request.policy)
        problems = policy.validate(document)
        return risk_pb2.ValidatePolicyResponse(
            valid=not problems,
            problems=[risk_pb2.PolicyProblem(path=p.path, message=p.message) for p in problems],
            digest="" if problems else policy.digest(document),
        )

    async def PutPolicy(
        self, request: risk_pb2.PutPolicyRequest, context: Context
    ) -> risk_pb2.PolicyVersion:
        _require_role(roles.RISK_OFFICER, "change the risk policy")
        corr = correlation.current()
        check = Checker()
        check.id("accountId", request.account_id, required=False)
        check.text("reason", request.reason, max_length=REASON_MAX, required=True)
        check.done("invalid policy change")
        document = json_format.MessageToDict(request.policy)
        problems = policy.validate(document)
        if problems:
            await self._audit_rejected_policy(request, document, problems)
            shown = "; ".join(f"{p.path or '/'}: {p.message}" for p in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise errors.RiskPolicyInvalid(
                f"the risk policy is invalid and was not applied; the active policy is "
                f"unchanged. {len(problems)} problem(s): {shown}{more}",
                field_errors=[errors.FieldError(p.path or "/", p.message) for p in problems],
            )

        def put(conn: Connection) -> versions.PolicyRecord:
            self.outbox.ensure_capacity(conn)
            locks.hold(conn, locks.tenant_key(corr.tenant_id))
            record, previous = versions.put_version(
                conn,
                tenant_id=corr.tenant_id,
                account_id=request.account_id,
                document=document,
                author=corr.user_id,
                reason=request.reason.strip(),
                now=self.clock.now(),
            )
            self.outbox.add(
                conn,
                outbox.event(
                    "risk.policy.updated",
                    source="risk",
                    outcome=outcomes.POLICY_ACTIVATED,
                    reason=record.reason,
                    policy_version=record.label,
                    account_id=record.account_id,
                    data={
                        "version": record.version,
                        "digest": record.digest,
                        "author": record.author,
                        "name": str(record.document.get("name", "")),
                        "previousVersion": previous.label if previous else "",
                        "previousDigest": previous.digest if previous else "",
                    },
                ),
            )
            return record

        record = await self._serialised(put)
        self.outbox.notify()
        return _policy_message(record)

    async def _audit_rejected_policy(
        self,
        request: risk_pb2.PutPolicyRequest,
        document: dict[str, Any],
        problems: list[policy.Problem],
    ) -> None:
        """A refused change is a decision too: who tried what, and why it was refused."""

        def op(conn: Connection) -> None:
            self.outbox.ensure_capacity(conn)
            active = versions.active_policy(
                conn, correlation.current().tenant_id, request.account_id
            )
            self.outbox.add(
                conn,
                outbox.event(
                    "risk.policy.rejected",
                    source="risk",
                    outcome=outcomes.RISK_POLICY_INVALID,
                    reason=f"{len(problems)} problem(s); the active policy is unchanged",
                    policy_version=active.label if active else "",
                    account_id=request.account_id,
                    data={
                        "schema": str(document.get("schema", "")),
                        "problems": [{"path": p.path, "message": p.message} for p in problems],
                        "requestReason": request.reason[:REASON_MAX],
                    },
                ),
            )

        await self.db.write(op)
        self.outbox.notify()

    # -- pre-trade -------------------------------------------------------------------------

    async def _decide(self, command: pretrade.Command) -> risk_pb2.RiskDecision:
        """The decision, audited; if risk cannot decide, an audited no."""
        try:
            decision = await locks.retry(
                lambda: self.db.write(
                    lambda c: pretrade.decide(c, self.outbox, self.books, command, self.clock.now())
                )
            )
        except errors.Gate4Error:
            raise  # e.g. the audit backlog is full: nothing can be recorded, so nothing runs
        except Exception as exc:
            log.exception("risk decision failed; refusing", extra={"command": command.kind})
            why = "risk state is busy" if isinstance(exc, locks.Contended) else "internal error"
            try:
                decision = await self.db.write(
                    lambda c: pretrade.undecided(
                        c, self.outbox, self.books, command, why, self.clock.now()
                    )
                )
            except Exception:
                raise errors.RiskUnavailable(
                    "risk controls could not decide or record a decision; nothing was executed"
                ) from None
        self.outbox.notify()
        return decision

    async def CheckDeployment(
        self, request: risk_pb2.CheckDeploymentRequest, context: Context
    ) -> risk_pb2.RiskDecision:
        if request.action not in ("create", "stop"):
            raise errors.ValidationFailed(
                "unknown deployment action",
                field_errors=[errors.FieldError("action", "create or stop")],
            )
        command = pretrade.Command(
            kind=f"deployment.{request.action}",
            tenant_id=correlation.current().tenant_id,
            account_id=request.account_id,
            deployment_id=request.deployment_id,
            details={
                "strategyId": request.strategy_id,
                "instruments": list(request.instruments),
                "capitalAllocation": request.capital_allocation,
                "mode": request.mode,
            },
        )
        if request.action == "create":
            try:
                command.deployment = checks.deployment_context(
                    request.account_id, list(request.instruments), request.capital_allocation
                )
            except checks.Undecidable as exc:
                command.undecidable = str(exc)
        return await self._decide(command)

    async def CheckOrder(
        self, request: risk_pb2.CheckOrderRequest, context: Context
    ) -> risk_pb2.RiskDecision:
        action = request.action or "submit"
        if action not in ("submit", "cancel"):
            raise errors.ValidationFailed(
                "unknown order action",
                field_errors=[errors.FieldError("action", "submit or cancel")],
            )
        order = request.order
        command = pretrade.Command(
            kind=f"order.{action}",
            tenant_id=correlation.current().tenant_id,
            account_id=order.account_id,
            deployment_id=order.deployment_id,
            order_id=order.order_id,
            details={
                "instrument": order.instrument,
                "side": order.side,
                "type": order.type,
                "quantity": order.quantity,
                "limitPrice": order.limit_price,
                "reduceOnly": order.reduce_only,
                "markPrice": order.mark_price,
                "markTime": json_format.MessageToDict(order)["markTime"]
                if order.HasField("mark_time")
                else "",
                "positionQuantity": order.position_quantity,
                "accountPositionQuantity": order.account_position_quantity,
                "accountOpenOrders": order.account_open_orders,
                "deploymentGrossExposure": order.deployment_gross_exposure,
                "capitalAllocation": order.capital_allocation,
                "positions": [
                    {
                        "instrument": p.instrument,
                        "quantity": p.quantity,
                        "version": str(p.version),
                        "price": p.price,
                    }
                    for p in order.positions
                ],
                "deploymentInstruments": list(order.deployment_instruments),
            },
        )
        if action == "submit":
            try:
                command.order = checks.order_context(order)
            except checks.Undecidable as exc:
                command.undecidable = str(exc)
        return await self._decide(command)

    async def ReportEquity(
        self, request: risk_pb2.ReportEquityRequest, context: Context
    ) -> risk_pb2.ReportEquityResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        check.id("accountId", request.account_id)
        check.id("deploymentId", request.deployment_id)
        equity = _signed(check, "equity", request.equity, required=True)
        realized = _signed(check, "realizedPnl", request.realized_pnl, required=False)
        unrealized = _signed(check, "unrealizedPnl", request.unrealized_pnl, required=False)
        check.done("invalid equity report")
        report = drawdown.EquityReport(
            account_id=request.account_id,
            deployment_id=request.deployment_id,
            equity=equity,
            capital=equity - realized - unrealized,
            at=as_utc(request.at.ToDatetime()) if request.HasField("at") else self.clock.now(),
        )

        def op(conn: Connection) -> drawdown.Result:
            # Equity reports drive drawdown trips: they may use the reserve, so a trip can
            # still fire while audit is down.
            self.outbox.ensure_capacity(conn, outbox.Headroom.RESERVE)
            return drawdown.record(conn, self.outbox, self.books, tenant, report)

        result = await self._serialised(op)
        self.outbox.notify()
        for switch in result.tripped:
            job = await self.db.read(
                partial(
                    killswitch.enforcement_for,
                    tenant_id=tenant,
                    scope=switch.scope,
                    scope_id=switch.scope_id,
                )
            )
            if job is not None:
                self.enforcer.enforce_later(job)
        return risk_pb2.ReportEquityResponse(
            tripped=result.tripped, states=result.states, applied=result.applied
        )

    async def SettleOrder(
        self, request: risk_pb2.SettleOrderRequest, context: Context
    ) -> risk_pb2.SettleOrderResponse:
        tenant = correlation.current().tenant_id
        parsed = settlement.parse(request)
        applied = await self._serialised(
            lambda c: settlement.apply(c, self.outbox, self.books, tenant, parsed, self.clock.now())
        )
        if applied.changed:
            self.outbox.notify()
        return risk_pb2.SettleOrderResponse(known=applied.known)

    # -- kill switch -----------------------------------------------------------------------

    async def GetKillSwitch(
        self, request: risk_pb2.KillSwitchRef, context: Context
    ) -> risk_pb2.KillSwitch:
        tenant = correlation.current().tenant_id
        killswitch.check_ref(tenant, request.scope, request.scope_id)
        return await self.db.read(
            lambda c: killswitch.get(c, tenant, request.scope, request.scope_id)
        )

    async def ListKillSwitches(
        self, request: risk_pb2.ListKillSwitchesRequest, context: Context
    ) -> risk_pb2.ListKillSwitchesResponse:
        tenant = correlation.current().tenant_id
        items = await self.db.read(lambda c: killswitch.list_all(c, tenant, request.engaged_only))
        return risk_pb2.ListKillSwitchesResponse(kill_switches=items)

    async def EngageKillSwitch(
        self, request: risk_pb2.EngageKillSwitchRequest, context: Context
    ) -> risk_pb2.KillSwitch:
        _require_role(roles.RISK_OFFICER, "engage a kill switch")
        corr = correlation.current()
        ref = request.ref
        killswitch.check_ref(corr.tenant_id, ref.scope, ref.scope_id)
        reason = _reason(request.reason)

        def op(conn: Connection) -> tuple[risk_pb2.KillSwitch, bool]:
            # Engaging is the brake: it may use the reserve while audit is down.
            self.outbox.ensure_capacity(conn, outbox.Headroom.RESERVE)
            locks.hold(conn, locks.tenant_key(corr.tenant_id))
            # The policy that governs the scope: the account's own or the tenant-wide one.
            if ref.scope == scopes.DEPLOYMENT:
                account = drawdown.account_of(conn, corr.tenant_id, ref.scope_id)
            else:
                account = ref.scope_id if ref.scope == scopes.ACCOUNT else ""
            rule = drawdown.rule_for(conn, corr.tenant_id, account)
            now = self.clock.now()
            evidence = drawdown.evidence_now(
                conn, corr.tenant_id, ref.scope, ref.scope_id, rule, now
            )
            return killswitch.engage(
                conn,
                self.outbox,
                corr.tenant_id,
                ref.scope,
                ref.scope_id,
                trigger=killswitch.MANUAL,
                reason=reason,
                by=corr.user_id,
                evidence=evidence,
                # Engaging by hand halts new risk; positions are closed only when asked.
                # (A drawdown trip follows the policy's flattenOnTrip: drawdown.py.)
                flatten=request.flatten,
                at=now,
            )

        state, changed = await self._serialised(op)
        self.outbox.notify()
        if not changed:
            return state
        job = await self.db.read(
            lambda c: killswitch.enforcement_for(c, corr.tenant_id, ref.scope, ref.scope_id)
        )
        if job is not None:
            # Enforced before answering, so the reply shows it; within the caller's deadline,
            # leaving time to answer (a slower enforcement is finished by the retry loop).
            remaining = deadlines.remaining()
            timeout = None if remaining is None else max(remaining - ANSWER_MARGIN, 0.1)
            await self.enforcer.enforce(job, within=timeout)
        return await self.db.read(
            lambda c: killswitch.get(c, corr.tenant_id, ref.scope, ref.scope_id)
        )

    async def ReleaseKillSwitch(
        self, request: risk_pb2.ReleaseKillSwitchRequest, context: Context
    ) -> risk_pb2.KillSwitch:
        _require_role(roles.RISK_OFFICER, "release a kill switch")
        corr = correlation.current()
        ref = request.ref
        killswitch.check_ref(corr.tenant_id, ref.scope, ref.scope_id)
        reason = _reason(request.reason)

        def op(conn: Connection) -> risk_pb2.KillSwitch:
            self.outbox.ensure_capacity(conn)
            locks.hold(conn, locks.tenant_key(corr.tenant_id))
            state = killswitch.release(
                conn,
                self.outbox,
                corr.tenant_id,
                ref.scope,
                ref.scope_id,
                by=corr.user_id,
                reason=reason,
                at=self.clock.now(),
            )
            drawdown.rebase(conn, corr.tenant_id, ref.scope, ref.scope_id)
            return state

        state = await self._serialised(op)
        self.outbox.notify()
        return state
