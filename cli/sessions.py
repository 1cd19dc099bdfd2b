"""`gate4 sessions`: conversation sessions (create, get, notifications).

`sessions create` opens an `openclaw` session by default when the command acts in an
OpenClaw lane and records that lane in `metadata.clientLane`, so an SRE can tell from the
session (and its audit events) whether OpenClaw came through its skill or the CLI.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from cli.apicommand import Context, add_command
from cli.errors import UsageError
from gate4_client.models import Session

NAME = "sessions"
HELP = "conversation sessions of the trading-operations assistant"

SESSION_CHANNELS = ("openclaw", "web", "mobile", "api")
#: Client feature flag of the runbook's containment step ("force notificationsOptIn=false").
ENV_NOTIFICATIONS = "GATE4_NOTIFICATIONS_OPT_IN"


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = add_command(
        commands,
        "create",
        help="open a session (channel openclaw in an OpenClaw lane)",
        description="Open a conversation session: POST /v2/conversations/sessions.",
        run=create_session,
        operations=("createSession",),
        side_effect=True,
    )
    create.add_argument("--topic", required=True, help="what the session is about")
    create.add_argument(
        "--session-channel",
        choices=SESSION_CHANNELS,
        help="the session's channel (default: openclaw with a lane, else api)",
    )
    create.add_argument(
        "--notifications",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"metadata.notificationsOptIn (default: ${ENV_NOTIFICATIONS}, else true)",
    )
    create.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra session metadata (string values; repeatable)",
    )

    get = add_command(
        commands,
        "get",
        help="read a session with its context memory",
        run=lambda ctx: ctx.client.get_session(ctx.args.session_id, request_id=ctx.request_id),
        operations=("getSession",),
        side_effect=False,
    )
    get.add_argument("session_id", metavar="SESSION_ID")

    notifications = add_command(
        commands,
        "notifications",
        help="list a session's pending proactive notifications",
        run=lambda ctx: ctx.client.list_notifications(
            ctx.args.session_id,
            include_delivered=ctx.args.include_delivered or None,
            request_id=ctx.request_id,
        ),
        operations=("listNotifications",),
        side_effect=False,
        columns=("createdAt", "kind", "severity", "deploymentId", "requestId", "message"),
    )
    notifications.add_argument("session_id", metavar="SESSION_ID")
    notifications.add_argument(
        "--include-delivered", action="store_true", help="also those already delivered"
    )


def notifications_default() -> bool:
    value = os.environ.get(ENV_NOTIFICATIONS, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{ENV_NOTIFICATIONS}={value!r}: use true or false")


def parse_meta(items: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {item!r}: use KEY=VALUE")
        meta[key] = value
    return meta


def create_session(ctx: Context) -> Session:
    args = ctx.args
    metadata = parse_meta(args.meta)
    opt_in = args.notifications if args.notifications is not None else notifications_default()
    metadata["notificationsOptIn"] = opt_in
    if ctx.lane is not None:
        metadata["clientLane"] = ctx.lane
    channel = args.session_channel or ("openclaw" if ctx.lane else "api")
    return ctx.client.create_session(
        topic=args.topic, channel=channel, metadata=metadata, request_id=ctx.request_id
    )
