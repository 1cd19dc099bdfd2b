"""`gate4 risk policy`: the tenant's `risk-policy.v1` (get, versions, validate, put)."""

from __future__ import annotations

import argparse

from cli.apicommand import Context, add_command, read_json_file
from gate4_client.models import PolicyValidation, PolicyVersion

NAME = "risk"
HELP = "risk policy: get, versions, validate, put"


def register(parser: argparse.ArgumentParser) -> None:
    groups = parser.add_subparsers(dest="topic", metavar="TOPIC", required=True)
    policy = groups.add_parser(
        "policy",
        help="the risk-policy.v1 document that drives the pre-trade checks",
        description="Read, validate and put the risk-policy.v1 document.",
    )
    commands = policy.add_subparsers(dest="command", metavar="COMMAND", required=True)

    get = add_command(
        commands,
        "get",
        help="read the active policy version (404 when none: side effects are refused)",
        run=lambda ctx: ctx.client.get_policy(
            account_id=ctx.args.account, request_id=ctx.request_id
        ),
        operations=("getPolicy",),
        side_effect=False,
    )
    get.add_argument("--account", metavar="ID", help="the account's policy (default: tenant-wide)")

    versions = add_command(
        commands,
        "versions",
        help="list policy versions, newest first",
        run=lambda ctx: ctx.client.list_policy_versions(
            account_id=ctx.args.account, limit=ctx.args.limit, request_id=ctx.request_id
        ),
        operations=("listPolicyVersions",),
        side_effect=False,
        columns=("version", "active", "createdAt", "author", "reason", "digest"),
    )
    versions.add_argument("--account", metavar="ID", help="the account's (default: tenant-wide)")
    versions.add_argument("--limit", type=int, metavar="N")

    validate = add_command(
        commands,
        "validate",
        help="validate a policy file without applying it",
        run=validate_policy,
        operations=("validatePolicy",),
        side_effect=False,
    )
    validate.add_argument("--file", required=True, metavar="PATH", help="JSON policy document")

    put = add_command(
        commands,
        "put",
        help="put a policy file as the new active version",
        run=put_policy,
        operations=("putPolicy",),
        side_effect=True,
    )
    put.add_argument("--file", required=True, metavar="PATH", help="JSON policy document")
    put.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    put.add_argument("--account", metavar="ID", help="for this account (default: tenant-wide)")


def validate_policy(ctx: Context) -> PolicyValidation:
    policy = read_json_file(ctx.args.file, "policy file")
    return ctx.client.validate_policy(policy, request_id=ctx.request_id)


def put_policy(ctx: Context) -> PolicyVersion:
    args = ctx.args
    policy = read_json_file(args.file, "policy file")
    return ctx.client.put_policy(
        policy, reason=args.reason, account_id=args.account, request_id=ctx.request_id
    )
