"""`gate4 audit`: the hash-chained audit trail (events by correlation id, chain verify).

`events` filters by requestId, deploymentId, orderId, sessionId, accountId, outcome, type
and time (since/until). `verify` prints the API's verification document and, when the chain
does not hold, one line naming its first broken link on stderr, and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial

from cli.apicommand import Context, add_command
from cli.errors import AUDIT_CHAIN_BROKEN, EXIT_FAILURE, EXIT_OK
from gate4_client.models import AuditEventPage, AuditFilters, ChainVerification

Handler = Callable[[argparse.Namespace], int]

NAME = "audit"
HELP = "audit trail: events by requestId, deployment, order, session; verify the chain"

#: Option -> query parameter of GET /v1/audit/events.
FILTERS = {
    "request_id": "requestId",
    "deployment": "deploymentId",
    "order": "orderId",
    "session": "sessionId",
    "account": "accountId",
    "outcome": "outcome",
    "type": "type",
    "since": "since",
    "until": "until",
}


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    events = add_command(
        commands,
        "events",
        help="read audit events, oldest first, filtered by correlation ids",
        run=query_events,
        operations=("queryAuditEvents",),
        side_effect=False,
        columns=(
            "sequence",
            "occurredAt",
            "type",
            "outcome",
            "requestId",
            "channel",
            "deploymentId",
            "orderId",
            "sessionId",
        ),
    )
    events.add_argument("--request-id", metavar="ID", help="events of this requestId")
    events.add_argument("--deployment", metavar="ID", help="events of this deployment")
    events.add_argument("--order", metavar="ID", help="events of this order")
    events.add_argument("--session", metavar="ID", help="events of this conversation session")
    events.add_argument("--account", metavar="ID", help="events of this account")
    events.add_argument("--outcome", metavar="CODE", help="e.g. APPROVED, KILL_SWITCH_ENGAGED")
    events.add_argument("--type", metavar="TYPE", help="e.g. risk.decision, killswitch.tripped")
    events.add_argument("--since", metavar="RFC3339", help="occurredAt >= this time")
    events.add_argument("--until", metavar="RFC3339", help="occurredAt < this time")
    events.add_argument("--limit", type=int, metavar="N", help="page size (1-500, default 100)")
    events.add_argument("--cursor", help="nextCursor of the previous page")

    verify = add_command(
        commands,
        "verify",
        help="recompute the tenant's hash chain and report the first bad link (exit 1 when broken)",
        run=verify_chain,
        operations=("verifyAuditChain",),
        side_effect=False,
    )
    verify.set_defaults(handler=partial(report_chain, verify.get_default("handler")))


def verify_chain(ctx: Context) -> ChainVerification:
    result = ctx.client.verify_audit_chain(request_id=ctx.request_id)
    ctx.args.verification = result
    return result


def report_chain(execute: Handler, args: argparse.Namespace) -> int:
    """Runs `verify` as every API command runs, then fails when the chain does not hold."""
    code = execute(args)
    result: ChainVerification | None = getattr(args, "verification", None)
    if code != EXIT_OK or result is None or result.get("valid", False):
        return code
    print(
        f"gate4: error: {AUDIT_CHAIN_BROKEN}: the audit chain of tenant {result.get('tenantId')} "
        "is broken: first bad link at "
        f"sequence {result.get('firstBadSequence')}: {result.get('problem')} "
        f"({result.get('checkedEvents')} events intact before it)",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def query_events(ctx: Context) -> AuditEventPage:
    args = ctx.args
    filters: AuditFilters = {}
    for option, name in FILTERS.items():
        value = getattr(args, option)
        if value is not None:
            filters[name] = value  # type: ignore[literal-required]
    return ctx.client.query_audit_events(
        filters, limit=args.limit, cursor=args.cursor, request_id=ctx.request_id
    )
