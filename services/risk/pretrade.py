"""Pre-trade decisions: every command asks here first, and every answer is audited.

One decision, in one transaction with its audit event (outbox):

1. Risk-reducing commands (deployment stop, order cancel, a reduce-only order that really
   reduces the deployment's position) are approved whatever the kill switch or policy
   says, so an operator can always get flat; they are still audited.
2. A kill switch holding the tenant, account or deployment: KILL_SWITCH_ENGAGED (423).
3. No active policy, or one that no longer validates: POLICY_INVALID (fail closed).
4. A command risk cannot evaluate (malformed or missing input): RISK_UNDECIDED.
5. The pre-trade checks (services.risk.checks); the first breach is the outcome.

An order's decision counts what risk itself holds (services.risk.exposure: the positions
ledger and the reservations of orders approved but not filled) and writes the order's row
(services.risk.reservations) in the same transaction, under the account's lock. One order
has one decision: when an order is asked about again (execution resumed a command after a
crash, before it recorded the order), the earlier decision is voided first, releasing what
it reserved, and audited as `risk.decision.voided` naming the decision that replaces it.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import checks, exposure, locks, reservations, stamps
from services.risk.books import Book, Books, load
from services.risk.checks import Breach, DeploymentContext, OrderContext
from services.risk.policy import Policy
from services.risk.reservations import Reservation
from services.runtime import outbox, outcomes
from services.runtime.decimals import format_decimal
from services.runtime.outbox import Outbox
from services.runtime.validation import ID_RE

ORDER_SUBMIT = "order.submit"
ORDER_CANCEL = "order.cancel"
DEPLOYMENT_CREATE = "deployment.create"
DEPLOYMENT_STOP = "deployment.stop"
ALWAYS_ALLOWED = (ORDER_CANCEL, DEPLOYMENT_STOP)


@dataclass
class Command:
    """What is being asked, in the terms the checks need."""

    kind: str
    tenant_id: str
    account_id: str = ""
    deployment_id: str = ""
    order_id: str = ""
    order: OrderContext | None = None
    deployment: DeploymentContext | None = None
    #: Why the command cannot be evaluated; set instead of order/deployment.
    undecidable: str = ""
    #: The command as asked, for the audit record.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Verdict:
    outcome: str
    reason: str
    breaches: list[Breach] = field(default_factory=list)


def headroom(command: Command) -> outbox.Headroom:
    """Risk-reducing commands may use the outbox reserve: they pass while audit is down."""
    reducing = command.kind in ALWAYS_ALLOWED or (
        command.kind == ORDER_SUBMIT and bool(command.details.get("reduceOnly"))
    )
    return outbox.Headroom.RESERVE if reducing else outbox.Headroom.BOUND


def decide(
    conn: Connection, box: Outbox, books: Books, command: Command, now: datetime
) -> risk_pb2.RiskDecision:
    """Runs inside a write op: evaluates, then records the decision in the same transaction.

    An order's decision reads and writes its account's book (services.risk.books), under
    the account's lock; other commands read a book loaded for them alone."""
    box.ensure_capacity(conn, headroom(command))
    tracked = _tracked(command)
    if tracked:
        book = books.hold(conn, command.tenant_id, command.account_id, now)
    else:
        book = load(conn, command.tenant_id, command.account_id, now)
    label = book.policy.label if book.policy else ""
    if tracked and command.order is not None:
        # A new command, not a changed one: should this op roll back, the caller's
        # command must not carry figures from a transaction that never happened.
        command = dataclasses.replace(
            command,
            order=exposure.assess(
                conn, book, command.deployment_id, command.order_id, command.order, now
            ),
        )
    verdict = _evaluate(book, command, now)
    counted = {"exposure": exposure.evidence(command.order)} if command.order else {}
    return _record(
        conn, box, command, verdict, label, now, book=book if tracked else None, extra=counted
    )


def _record(
    conn: Connection,
    box: Outbox,
    command: Command,
    verdict: _Verdict,
    label: str,
    now: datetime,
    *,
    book: Book | None = None,
    books: Books | None = None,
    extra: dict[str, Any] | None = None,
) -> risk_pb2.RiskDecision:
    """The decision, its order's row (voiding an earlier decision) and its audit event.

    The row is written when the order's account is held: with its `book` (a decision), or
    with `books` to bring up to date (a refusal without a book)."""
    approved = verdict.outcome == outcomes.APPROVED
    decision = risk_pb2.RiskDecision(
        approved=approved,
        outcome=verdict.outcome,
        reason=verdict.reason,
        policy_version=label,
        decision_id=f"dec_{uuid.uuid4().hex}",
        breaches=[b.message() for b in verdict.breaches],
    )
    if book is not None or books is not None:
        order = command.order
        decided = reservations.Decided(
            order_id=command.order_id,
            account_id=command.account_id,
            deployment_id=command.deployment_id,
            instrument=order.instrument if order else "",
            side=order.side if order else "",
            quantity=order.quantity if order else checks.ZERO,
            price=order.price() if order else None,
            decision_id=decision.decision_id,
            outcome=verdict.outcome,
            policy_version=label,
            approved=approved,
        )
        previous = reservations.record(conn, command.tenant_id, decided, now)
        if previous is not None:
            _void(conn, box, previous, decision.decision_id)
            if previous.account_id != command.account_id:
                # The earlier decision reserved for another account: its books are stale.
                stamps.touch(conn, command.tenant_id, previous.account_id)
        row = reservations.as_row(command.tenant_id, decided, now)
        if book is not None:
            book.decided(row)
        elif books is not None:
            books.changed(conn, command.tenant_id, command.account_id, lambda b: b.decided(row))

    data: dict[str, Any] = {
        "decisionId": decision.decision_id,
        "approved": approved,
        "command": command.kind,
        **command.details,
    }
    if verdict.breaches:
        data["breaches"] = [b.as_dict() for b in verdict.breaches]
    data.update(extra or {})
    evidence = struct_pb2.Struct()
    evidence.update(data)
    decision.evidence.CopyFrom(evidence)
    box.add(
        conn,
        outbox.event(
            "risk.decision",
            source="risk",
            outcome=verdict.outcome,
            reason=verdict.reason,
            policy_version=label,
            account_id=command.account_id,
            deployment_id=command.deployment_id,
            order_id=command.order_id,
            data=data,
        ),
    )
    return decision


def _tracked(command: Command) -> bool:
    """Whether the command is a new order whose decision gets a row (ids fit the columns)."""
    return command.kind == ORDER_SUBMIT and all(
        ID_RE.match(value)
        for value in (command.order_id, command.account_id, command.deployment_id)
    )


def _void(conn: Connection, box: Outbox, previous: Reservation, superseded_by: str) -> None:
    """Audits that the order's earlier decision no longer stands; its row was overwritten,
    which released what it reserved."""
    released = previous.remaining
    box.add(
        conn,
        outbox.event(
            "risk.decision.voided",
            source="risk",
            outcome=outcomes.VOIDED,
            reason=(
                f"order {previous.order_id} was asked about again (execution resumed the "
                f"command before it recorded the order): decision {previous.decision_id} "
                f"({previous.outcome}) is void and {superseded_by} replaces it"
            ),
            policy_version=previous.policy_version,
            account_id=previous.account_id,
            deployment_id=previous.deployment_id,
            order_id=previous.order_id,
            data={
                "decisionId": previous.decision_id,
                "supersededBy": superseded_by,
                "previousOutcome": previous.outcome,
                "previousState": previous.state,
                "releasedQuantity": format_decimal(released),
            },
        ),
    )


def _evaluate(book: Book, command: Command, now: datetime) -> _Verdict:
    held = book.engaged_for(command.deployment_id)
    holding = (
        f"kill switch engaged for {held.scope} {held.scope_id}: {held.reason or held.trigger}"
        if held is not None
        else ""
    )
    if command.kind in ALWAYS_ALLOWED:
        note = f" (while {holding})" if holding else ""
        return _Verdict(outcomes.APPROVED, f"{command.kind} reduces risk: always allowed{note}")

    order = command.order
    if order is not None and order.reduce_only:
        breach = checks.reducing_breach(order)
        if breach is None:
            note = f" (while {holding})" if holding else ""
            return _Verdict(
                outcomes.APPROVED, f"reduce-only order reduces the position: allowed{note}"
            )
        if held is None:
            return _Verdict(breach.outcome, breach.detail, [breach])
        # Not actually reducing, so the switch holds it like any other order.
        return _Verdict(outcomes.KILL_SWITCH_ENGAGED, f"{holding}; {breach.detail}", [breach])

    if held is not None:
        return _Verdict(outcomes.KILL_SWITCH_ENGAGED, holding)
    record, parsed = book.policy, book.parsed
    if record is None:
        return _Verdict(
            outcomes.POLICY_INVALID,
            "no valid risk-policy.v1 is active for this tenant or account; side-effecting "
            "commands are refused until one is put",
        )
    if not isinstance(parsed, Policy):
        return _Verdict(
            outcomes.POLICY_INVALID,
            f"the active policy {record.label} does not validate ({parsed}); commands are "
            "refused until a valid one is put",
        )
    if command.undecidable:
        return _Verdict(
            outcomes.RISK_UNDECIDED, f"risk cannot evaluate this command: {command.undecidable}"
        )

    loss = book.daily_loss(now.date().isoformat())
    if command.kind == ORDER_SUBMIT and order is not None:
        window = timedelta(seconds=parsed.limits.order_rate.window_seconds)
        in_window = book.orders_in_window(now - window, besides=command.order_id)
        breaches = checks.order_breaches(
            parsed, order, now=now, orders_in_window=in_window, daily_loss=loss
        )
    elif command.kind == DEPLOYMENT_CREATE and command.deployment is not None:
        breaches = checks.deployment_breaches(parsed, command.deployment, daily_loss=loss)
    else:
        return _Verdict(outcomes.RISK_UNDECIDED, f"risk has no checks for {command.kind!r}")

    if not breaches:
        return _Verdict(outcomes.APPROVED, f"all pre-trade checks passed under {record.label}")
    first, others = breaches[0], breaches[1:]
    reason = f"{first.detail} ({record.label})"
    if others:
        reason += "; also " + ", ".join(b.outcome for b in others)
    return _Verdict(first.outcome, reason, breaches)


def undecided(
    conn: Connection, box: Outbox, books: Books, command: Command, why: str, now: datetime
) -> risk_pb2.RiskDecision:
    """The audited "no" when the decision itself failed (state unreadable, lock contended).

    It stands as the order's one decision when the account's lock can be had: an earlier
    decision is voided and the order's row records the refusal. With the lock busy the
    refusal is only audited, and whatever an earlier decision reserved stays reserved.
    """
    box.ensure_capacity(conn, headroom(command))
    verdict = _Verdict(
        outcomes.RISK_UNDECIDED, f"risk could not decide ({why}); the command is refused"
    )
    tracked = _tracked(command)
    if tracked:
        try:
            locks.hold(conn, locks.account_key(command.tenant_id, command.account_id))
        except locks.Contended:
            tracked = False
    return _record(conn, box, command, verdict, "", now, books=books if tracked else None)
