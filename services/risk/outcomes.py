"""Outcome codes: what each risk decision and kill-switch transition is recorded as.

A refused command answers 422 `RISK_LIMIT_BREACHED` with one of the check outcomes, or 423
`KILL_SWITCH_ENGAGED`; the audit trail carries the same code in `outcome`.
docs/portal/operations/gate4-risk-policy-controls.md lists them for operators.
"""

from __future__ import annotations

# Decisions on commands (audit type "risk.decision").
APPROVED = "APPROVED"
POLICY_INVALID = "POLICY_INVALID"
KILL_SWITCH_ENGAGED = "KILL_SWITCH_ENGAGED"
RISK_UNDECIDED = "RISK_UNDECIDED"
REDUCE_ONLY_INVALID = "REDUCE_ONLY_INVALID"

# Pre-trade checks, in the order they are evaluated.
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
# (audit type "risk.decision.voided"), or approved but never executed
# ("risk.decision.unexecuted").
VOIDED = "VOIDED"
NOT_EXECUTED = "NOT_EXECUTED"

# Policy changes (audit types "risk.policy.updated" / "risk.policy.rejected").
POLICY_ACTIVATED = "POLICY_ACTIVATED"
RISK_POLICY_INVALID = "RISK_POLICY_INVALID"

# Drawdown tracking (audit type "risk.drawdown").
DRAWDOWN_BREACH = "DRAWDOWN_BREACH"
DRAWDOWN_RECOVERED = "DRAWDOWN_RECOVERED"

# Kill-switch transitions (audit types "killswitch.*").
KILL_SWITCH_TRIPPED = "KILL_SWITCH_TRIPPED"
ENGAGED = "ENGAGED"
ALREADY_ENGAGED = "ALREADY_ENGAGED"
RELEASED = "RELEASED"
ENFORCED = "ENFORCED"
ENFORCEMENT_FAILED = "ENFORCEMENT_FAILED"
