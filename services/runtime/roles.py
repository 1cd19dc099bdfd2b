"""Role names: what a user token may carry, and the role only service identities hold.

The gateway admits a user's token with the PLATFORM roles it names and drops any other; each
write operation names the one role that may perform it (gateway/operations.py), and services
check the same names again on the calls they serve.
"""

from __future__ import annotations

#: Reads only; every platform role may read.
VIEWER = "viewer"
#: Deployments and orders.
TRADER = "trader"
#: Risk policies and kill switches.
RISK_OFFICER = "risk-officer"
#: Operating the platform (API keys, replicas).
SRE = "sre"

#: The roles a user can hold, in the order tokens and the CLI list them.
PLATFORM = (VIEWER, TRADER, RISK_OFFICER, SRE)

#: Held only by the platform's own callers (the notification feed); never from a user token.
INTERNAL = "internal"
