"""Outcome codes: the one list of what a decision or a command came to, across services.

Risk and execution record one of these in the `outcome` of every audit event; a command the
risk gate refused answers 422 `RISK_LIMIT_BREACHED` with one of REFUSALS in the problem's
`outcome` (or 423 `KILL_SWITCH_ENGAGED`), and an order carries one of ORDER_OUTCOMES. Error
codes are the other list (services/runtime/errors.py); an event that records a refusal by
error carries the error's code. The OpenAPI document and the portal pages name these codes:
tests/docs/test_codes.py holds them to this module.
"""

from __future__ import annotations

# -- risk decisions on commands (audit type "risk.decision") ------------------------------
APPROVED = "APPROVED"
KILL_SWITCH_ENGAGED = "KILL_SWITCH_ENGAGED"
POLICY_INVALID = "POLICY_INVALID"
RISK_UNDECIDED = "RISK_UNDECIDED"
# A reduce-only order that would not reduce the deployment's position, or would flip it. Risk
# checks it against its books and execution again under the deployment's row lock: one rule,
# one code, whichever of the two sees the violation first.
REDUCE_ONLY_VIOLATION = "REDUCE_ONLY_VIOLATION"

# The pre-trade checks, in the order they are evaluated.
DEPLOYMENT_INSTRUMENT_NOT_ALLOWED = "DEPLOYMENT_INSTRUMENT_NOT_ALLOWED"
INSTRUMENT_RESTRICTED = "INSTRUMENT_RESTRICTED"
INSTRUMENT_NOT_ALLOWED = "INSTRUMENT_NOT_ALLOWED"
MARK_MISSING = "MARK_MISSING"
MARK_STALE = "MARK_STALE"
PRICE_COLLAR = "PRICE_COLLAR"
ORDER_QUANTITY_LIMIT = "ORDER_QUANTITY_LIMIT"
ORDER_NOTIONAL_LIMIT = "ORDER_NOTIONAL_LIMIT"
POSITION_NOTIONAL_LIMIT = "POSITION_NOTIONAL_LIMIT"
DEPLOYMENT_CAPITAL_LIMIT = "DEPLOYMENT_CAPITAL_LIMIT"
CAPITAL_ALLOCATION_LIMIT = "CAPITAL_ALLOCATION_LIMIT"
OPEN_ORDERS_LIMIT = "OPEN_ORDERS_LIMIT"
ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT"
DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"

# What became of a decision afterwards: superseded by a new decision for the same order
# ("risk.decision.voided"), or approved but never executed ("risk.decision.unexecuted").
VOIDED = "VOIDED"
NOT_EXECUTED = "NOT_EXECUTED"

# Policy changes ("risk.policy.updated" / "risk.policy.rejected").
POLICY_ACTIVATED = "POLICY_ACTIVATED"
RISK_POLICY_INVALID = "RISK_POLICY_INVALID"

# Drawdown tracking ("risk.drawdown").
DRAWDOWN_BREACH = "DRAWDOWN_BREACH"
DRAWDOWN_RECOVERED = "DRAWDOWN_RECOVERED"

# Kill-switch transitions ("killswitch.*"); execution answers an enforcement with ENFORCED or
# ENFORCED_WITH_PROBLEMS ("killswitch.enforced").
KILL_SWITCH_TRIPPED = "KILL_SWITCH_TRIPPED"
ENGAGED = "ENGAGED"
ALREADY_ENGAGED = "ALREADY_ENGAGED"
RELEASED = "RELEASED"
ENFORCED = "ENFORCED"
ENFORCED_WITH_PROBLEMS = "ENFORCED_WITH_PROBLEMS"
ENFORCEMENT_FAILED = "ENFORCEMENT_FAILED"

# -- execution ------------------------------------------------------------------------------
# Acting without a decision: a risk-reducing stop or flatten while risk cannot answer.
RISK_UNAVAILABLE = "RISK_UNAVAILABLE"
# An order the venue refused, or that the orchestrator could not get through.
VENUE_REJECTED = "VENUE_REJECTED"
VENUE_RETRY_BUDGET_EXHAUSTED = "VENUE_RETRY_BUDGET_EXHAUSTED"
VENUE_NOT_RECEIVED = "VENUE_NOT_RECEIVED"
VENUE_RETRY = "VENUE_RETRY"
# Reconciliation asked the venue about an order whose answer was never recorded.
FOUND_AT_VENUE = "FOUND_AT_VENUE"
NOT_AT_VENUE = "NOT_AT_VENUE"
# Deployment life cycle ("deployment.*") and its venue health.
RUNNING = "RUNNING"
STOPPED = "STOPPED"
FAILED = "FAILED"
RECOVERED = "RECOVERED"
# A keyed command answered from its stored result ("command.replayed").
REPLAYED = "REPLAYED"
# Paper-venue marks applied ("sandbox.marks").
ACCEPTED = "ACCEPTED"

#: What a 422 `RISK_LIMIT_BREACHED` names in its `outcome`.
REFUSALS = (
    POLICY_INVALID,
    RISK_UNDECIDED,
    REDUCE_ONLY_VIOLATION,
    DEPLOYMENT_INSTRUMENT_NOT_ALLOWED,
    INSTRUMENT_RESTRICTED,
    INSTRUMENT_NOT_ALLOWED,
    MARK_MISSING,
    MARK_STALE,
    PRICE_COLLAR,
    ORDER_QUANTITY_LIMIT,
    ORDER_NOTIONAL_LIMIT,
    POSITION_NOTIONAL_LIMIT,
    DEPLOYMENT_CAPITAL_LIMIT,
    CAPITAL_ALLOCATION_LIMIT,
    OPEN_ORDERS_LIMIT,
    ORDER_RATE_LIMIT,
    DAILY_LOSS_LIMIT,
)

#: What an order's `outcome` says: the decision that let it through, or why it was rejected.
ORDER_OUTCOMES = (
    APPROVED,
    RISK_UNAVAILABLE,
    VENUE_REJECTED,
    VENUE_RETRY_BUDGET_EXHAUSTED,
    VENUE_NOT_RECEIVED,
)

#: Every outcome code, in the order of this module.
ALL: tuple[str, ...] = tuple(
    dict.fromkeys(
        value
        for name, value in dict(globals()).items()
        if name.isupper() and isinstance(value, str) and name == value
    )
)
