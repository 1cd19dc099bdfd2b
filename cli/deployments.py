"""`gate4 deployments`: strategy deployments on the paper venue (create, list, get, stop)."""

from __future__ import annotations

import argparse
import sys

from cli.apicommand import Context, add_command, add_idempotency_key
from gate4_client.models import Deployment

NAME = "deployments"
HELP = "strategy deployments: create, list, get, stop"

STATES = ("pending", "running", "stopping", "stopped", "failed")


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = add_command(
        commands,
        "create",
        help="deploy a strategy (passes the pre-trade risk gate and the kill switch)",
        run=create_deployment,
        operations=("createDeployment",),
        side_effect=True,
    )
    create.add_argument("--strategy", required=True, metavar="ID", help="strategy id")
    create.add_argument("--account", required=True, metavar="ID", help="account id")
    create.add_argument(
        "--instrument",
        action="append",
        required=True,
        metavar="SYMBOL",
        help="instrument to trade, e.g. BTC-USD (repeatable)",
    )
    create.add_argument(
        "--capital", required=True, metavar="DECIMAL", help="capital allocation, e.g. 10000"
    )
    create.add_argument("--mode", choices=("paper",), help="venue mode (default: paper)")
    add_idempotency_key(create)

    listing = add_command(
        commands,
        "list",
        help="list deployments, newest first",
        run=lambda ctx: ctx.client.list_deployments(
            account_id=ctx.args.account,
            state=ctx.args.state,
            limit=ctx.args.limit,
            cursor=ctx.args.cursor,
            request_id=ctx.request_id,
        ),
        operations=("listDeployments",),
        side_effect=False,
        columns=("deploymentId", "state", "accountId", "strategyId", "equity", "drawdown"),
    )
    listing.add_argument("--account", metavar="ID", help="only this account's")
    listing.add_argument("--state", choices=STATES, help="only in this state")
    listing.add_argument("--limit", type=int, metavar="N", help="page size (1-500)")
    listing.add_argument("--cursor", help="nextCursor of the previous page")

    get = add_command(
        commands,
        "get",
        help="read a deployment: state, positions, P&L, drawdown, kill switch",
        run=lambda ctx: ctx.client.get_deployment(
            ctx.args.deployment_id, request_id=ctx.request_id
        ),
        operations=("getDeployment",),
        side_effect=False,
    )
    get.add_argument("deployment_id", metavar="DEPLOYMENT_ID")

    stop = add_command(
        commands,
        "stop",
        help="stop a deployment (cancels open orders; --flatten closes positions)",
        description="Stop a deployment: POST /v1/deployments/{id}/actions/stop. Allowed while "
        "a kill switch holds it, and while risk or audit is down. A stop that cannot finish "
        "within the request (flattening while risk hangs, say) is accepted: the answer is the "
        "deployment in state `stopping` (HTTP 202); follow it with `gate4 deployments get`, "
        "or run the same command with the same --idempotency-key for the final outcome.",
        run=stop_deployment,
        operations=("stopDeployment",),
        side_effect=True,
    )
    stop.add_argument("deployment_id", metavar="DEPLOYMENT_ID")
    stop.add_argument(
        "--flatten", action="store_true", help="also close positions with market orders"
    )
    stop.add_argument("--reason", help="why (recorded in the audit trail)")
    add_idempotency_key(stop)


def create_deployment(ctx: Context) -> Deployment:
    args = ctx.args
    return ctx.client.create_deployment(
        strategy_id=args.strategy,
        account_id=args.account,
        instruments=args.instrument,
        capital_allocation=args.capital,
        mode=args.mode,
        idempotency_key=ctx.new_idempotency_key(),
        request_id=ctx.request_id,
    )


def stop_deployment(ctx: Context) -> Deployment:
    args = ctx.args
    key = ctx.new_idempotency_key()
    deployment = ctx.client.stop_deployment(
        args.deployment_id,
        flatten=args.flatten or None,
        reason=args.reason,
        idempotency_key=key,
        request_id=ctx.request_id,
    )
    if deployment.get("state") == "stopping":
        # 202: accepted and still at work; it finishes on its own.
        print(
            f"gate4: stop accepted, {args.deployment_id} is still stopping: follow it with "
            f"`gate4 deployments get {args.deployment_id}`, or rerun with --idempotency-key "
            f"{key} for the final outcome",
            file=sys.stderr,
        )
    return deployment
