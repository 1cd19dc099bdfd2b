"""`gate4 orders`: orders of deployments (submit, list, get, cancel)."""

from __future__ import annotations

import argparse

from cli.apicommand import Context, add_command, add_idempotency_key
from gate4_client.models import Order

NAME = "orders"
HELP = "orders: submit, list, get, cancel"

STATUSES = ("accepted", "partially_filled", "filled", "cancelled", "rejected")


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    submit = add_command(
        commands,
        "submit",
        help="submit an order (pre-trade risk checks and kill switch first)",
        run=submit_order,
        operations=("submitOrder",),
        side_effect=True,
    )
    submit.add_argument("--deployment", required=True, metavar="ID", help="deployment id")
    submit.add_argument("--instrument", required=True, metavar="SYMBOL", help="e.g. BTC-USD")
    submit.add_argument("--side", required=True, choices=("buy", "sell"))
    submit.add_argument("--type", choices=("market", "limit"), default="market")
    submit.add_argument("--quantity", required=True, metavar="DECIMAL")
    submit.add_argument("--limit-price", metavar="DECIMAL", help="required with --type limit")
    submit.add_argument(
        "--reduce-only", action="store_true", help="only reduce the position (passes a kill switch)"
    )
    submit.add_argument("--client-order-id", metavar="ID", help="your own reference")
    add_idempotency_key(submit)

    listing = add_command(
        commands,
        "list",
        help="list orders",
        run=lambda ctx: ctx.client.list_orders(
            deployment_id=ctx.args.deployment,
            status=ctx.args.status,
            limit=ctx.args.limit,
            cursor=ctx.args.cursor,
            request_id=ctx.request_id,
        ),
        operations=("listOrders",),
        side_effect=False,
        columns=("orderId", "status", "deploymentId", "instrument", "side", "quantity", "outcome"),
    )
    listing.add_argument("--deployment", metavar="ID", help="only this deployment's")
    listing.add_argument("--status", choices=STATUSES, help="only in this status")
    listing.add_argument("--limit", type=int, metavar="N", help="page size (1-500)")
    listing.add_argument("--cursor", help="nextCursor of the previous page")

    get = add_command(
        commands,
        "get",
        help="read an order: status, fills, risk outcome",
        run=lambda ctx: ctx.client.get_order(ctx.args.order_id, request_id=ctx.request_id),
        operations=("getOrder",),
        side_effect=False,
    )
    get.add_argument("order_id", metavar="ORDER_ID")

    cancel = add_command(
        commands,
        "cancel",
        help="cancel the unfilled rest of an open order",
        run=lambda ctx: ctx.client.cancel_order(
            ctx.args.order_id, reason=ctx.args.reason, request_id=ctx.request_id
        ),
        operations=("cancelOrder",),
        side_effect=True,
    )
    cancel.add_argument("order_id", metavar="ORDER_ID")
    cancel.add_argument("--reason", help="why (recorded in the audit trail)")


def submit_order(ctx: Context) -> Order:
    args = ctx.args
    return ctx.client.submit_order(
        deployment_id=args.deployment,
        instrument=args.instrument,
        side=args.side,
        type=args.type,
        quantity=args.quantity,
        limit_price=args.limit_price,
        reduce_only=args.reduce_only or None,
        client_order_id=args.client_order_id,
        idempotency_key=ctx.new_idempotency_key(),
        request_id=ctx.request_id,
    )
