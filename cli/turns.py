"""`gate4 turns`: send a message in a conversation session and print the assistant's turn."""

from __future__ import annotations

import argparse

from cli.apicommand import Context, add_command, add_idempotency_key
from gate4_client.models import Turn

NAME = "turns"
HELP = "conversation turns: send a message, get the assistant's reply"


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    send = add_command(
        commands,
        "send",
        help="send a message; prints the reply, context memory and notifications",
        description="Send a message in a session: POST /v2/conversations/sessions/{id}/turns.",
        run=send_turn,
        operations=("createTurn",),
        side_effect=True,
    )
    send.add_argument("session_id", metavar="SESSION_ID")
    send.add_argument("--message", "-m", required=True, help="the user's message")
    send.add_argument(
        "--notifications",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="change the session's notificationsOptIn from this turn on",
    )
    add_idempotency_key(send)


def send_turn(ctx: Context) -> Turn:
    args = ctx.args
    return ctx.client.create_turn(
        args.session_id,
        args.message,
        notifications_opt_in=args.notifications,
        idempotency_key=ctx.new_idempotency_key(),
        request_id=ctx.request_id,
    )
