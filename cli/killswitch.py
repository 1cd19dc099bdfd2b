"""`gate4 killswitch`: per-scope kill switches (list, status, engage, release).

A scope is `tenant`, `account` or `deployment`; the scope id of `tenant` defaults to the
configured tenant, so `gate4 killswitch status tenant` reads the caller's own.
"""

from __future__ import annotations

import argparse

from cli.apicommand import Context, add_command
from cli.errors import UsageError
from gate4_client.models import KillSwitch

NAME = "killswitch"
HELP = "kill switches: list, status, engage, release"

SCOPES = ("tenant", "account", "deployment")


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = add_command(
        commands,
        "list",
        help="list the tenant's kill switches",
        run=lambda ctx: ctx.client.list_kill_switches(
            engaged_only=ctx.args.engaged_only or None, request_id=ctx.request_id
        ),
        operations=("listKillSwitches",),
        side_effect=False,
        columns=("scope", "scopeId", "engaged", "trigger", "reason", "engagedAt", "engagedBy"),
    )
    listing.add_argument("--engaged-only", action="store_true", help="only engaged ones")

    status = add_command(
        commands,
        "status",
        help="read one scope's kill switch: engaged, trigger, breach evidence",
        run=lambda ctx: ctx.client.get_kill_switch(*scope_ref(ctx), request_id=ctx.request_id),
        operations=("getKillSwitch",),
        side_effect=False,
    )
    add_scope(status)

    engage = add_command(
        commands,
        "engage",
        help="engage a kill switch by hand (risk-officer): halt new risk in scope",
        description=(
            "Engage a kill switch by hand (risk-officer). It halts new risk in scope: new "
            "orders and deployments are refused with 423 and open orders are cancelled; stop, "
            "cancel and reduce-only orders still pass. Positions are left as they are unless "
            "--flatten is given, which also closes them with reduce-only market orders. (A "
            "drawdown trip flattens when the policy's killSwitch.flattenOnTrip says so.)"
        ),
        run=engage_switch,
        operations=("engageKillSwitch",),
        side_effect=True,
    )
    add_scope(engage)
    engage.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    engage.add_argument(
        "--flatten",
        action="store_true",
        help="also close every position in scope with reduce-only market orders (default: "
        "positions are kept)",
    )

    release = add_command(
        commands,
        "release",
        help="release an engaged kill switch (risk-officer, audited)",
        run=release_switch,
        operations=("releaseKillSwitch",),
        side_effect=True,
    )
    add_scope(release)
    release.add_argument("--reason", required=True, help="why (recorded in the audit trail)")


def add_scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scope", choices=SCOPES, metavar="SCOPE", help=", ".join(SCOPES))
    parser.add_argument(
        "scope_id",
        nargs="?",
        metavar="SCOPE_ID",
        help="account or deployment id; for tenant, default: the configured tenant",
    )


def scope_ref(ctx: Context) -> tuple[str, str]:
    scope: str = ctx.args.scope
    scope_id: str | None = ctx.args.scope_id
    if scope_id is None:
        if scope != "tenant":
            raise UsageError(f"killswitch {ctx.args.command} {scope} needs a SCOPE_ID")
        scope_id = ctx.tenant_id
    return scope, scope_id


def engage_switch(ctx: Context) -> KillSwitch:
    scope, scope_id = scope_ref(ctx)
    return ctx.client.engage_kill_switch(
        scope, scope_id, reason=ctx.args.reason, flatten=ctx.args.flatten, request_id=ctx.request_id
    )


def release_switch(ctx: Context) -> KillSwitch:
    scope, scope_id = scope_ref(ctx)
    return ctx.client.release_kill_switch(
        scope, scope_id, reason=ctx.args.reason, request_id=ctx.request_id
    )
