"""Kill-switch scopes: what a switch holds, broadest first.

Risk keeps switches (and drawdown rules) per scope; execution enforces them and, reading
them, looks a deployment up in this order. Scopes travel as these strings in the risk and
execution APIs, so both services and the gateway's contract name the same three.
"""

from __future__ import annotations

TENANT = "tenant"
ACCOUNT = "account"
DEPLOYMENT = "deployment"

#: Every scope, broadest first: the order a deployment's switches are looked up in.
SCOPES = (TENANT, ACCOUNT, DEPLOYMENT)
