"""`gate4 apikeys`: the API key life cycle, run by an operator on the gateway's database.

There is deliberately no HTTP route (and no `admin` role) for this: only someone who holds
the gateway database's URL can issue, revoke or rotate keys, so no leaked user credential can
mint new ones. The commands work the same in dev and prod (GATE4_GATEWAY_DATABASE_URL or
GATE4_DATABASE_URL; locally var/gateway.db).

- `create --tenant T --label L [--expires-in S]`: prints the new key, once, on stdout;
- `list [--tenant T]`: prefix (`g4k_<keyId>`), tenant, label, status and times; never a key;
- `revoke KEY`: refused by every gateway within GATE4_API_KEY_CACHE_SECONDS (default 30 s);
- `rotate KEY [--grace S]`: a new key (printed once) for the same tenant and label; the old
  one keeps working for the grace period (default 24 h), then expires.

KEY is the prefix `g4k_<keyId>` that `list` shows, the bare key id, or the whole key.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cli.apicommand import render_table
from cli.credentials import LABEL_MAX, check_id, gateway_keys
from cli.errors import EXIT_NOT_FOUND, EXIT_OK, CliError, UsageError
from cli.settings import load_settings
from gateway.apikeys import ApiKeyInfo, ApiKeyNotFound
from services.runtime.auth import API_KEY_PREFIX, api_key_id

NAME = "apikeys"
HELP = "create, list, revoke and rotate API keys in the gateway's database (operators)"

DEFAULT_GRACE_SECONDS = 24 * 3600
LIST_COLUMNS = ("prefix", "tenantId", "label", "status", "createdAt", "expiresAt", "revokedAt")


class KeyNotFound(CliError):
    exit_code = EXIT_NOT_FOUND
    code = "API_KEY_NOT_FOUND"


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
        sub.add_argument(
            "--var-dir",
            type=Path,
            default=None,
            metavar="DIR",
            help="var dir of a local gateway (its var/gateway.db) when no GATE4_*DATABASE_URL "
            "is set",
        )
        return sub

    create = command("create", "issue a key for a tenant; prints it once on stdout")
    create.add_argument("--tenant", required=True, help="tenant id")
    create.add_argument("--label", required=True, help="what the key is for (shown by list)")
    create.add_argument(
        "--expires-in", type=int, default=None, metavar="SECONDS", help="expiry (default: none)"
    )
    create.set_defaults(handler=cmd_create)

    listing = command("list", "list keys by prefix and label (never the keys themselves)")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")
    listing.set_defaults(handler=cmd_list)

    revoke = command("revoke", "revoke a key at once (gateways refuse it within their cache time)")
    revoke.add_argument("key", metavar="KEY", help="g4k_<keyId> as list shows it, or the key id")
    revoke.set_defaults(handler=cmd_revoke)

    rotate = command("rotate", "replace a key; the old one works for a grace period")
    rotate.add_argument("key", metavar="KEY", help="g4k_<keyId> as list shows it, or the key id")
    rotate.add_argument(
        "--grace",
        type=int,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help=f"how long the old key keeps working (default {DEFAULT_GRACE_SECONDS}, 24 h; "
        "0 ends it now)",
    )
    rotate.set_defaults(handler=cmd_rotate)


def key_id_of(text: str) -> str:
    """The key id in `g4k_<keyId>`, a whole key, or a bare id."""
    whole = api_key_id(text)
    if whole is not None:
        return whole
    key_id = text.removeprefix(f"{API_KEY_PREFIX}_")
    if not key_id or not key_id.isalnum():
        raise UsageError(f"not a key id: use g4k_<keyId> as `gate4 {NAME} list` shows it")
    return key_id


def _note(text: str) -> None:
    print(f"gate4: {text}", file=sys.stderr, flush=True)


def _print_key(plaintext: str) -> None:
    # The only place the key is ever shown: stdout alone, so `> file` or a pipe takes it.
    sys.stdout.write(plaintext + "\n")
    sys.stdout.flush()


def cmd_create(args: argparse.Namespace) -> int:
    check_id("tenant id", args.tenant)
    if not args.label or len(args.label) > LABEL_MAX:
        raise UsageError(f"--label must be 1-{LABEL_MAX} characters")
    if args.expires_in is not None and args.expires_in <= 0:
        raise UsageError("--expires-in must be a positive number of seconds")
    expires_at = datetime.now(UTC) + timedelta(seconds=args.expires_in) if args.expires_in else None
    with gateway_keys(load_settings(args.var_dir)) as store:
        plaintext = store.create_sync(args.tenant, args.label, expires_at)
    _print_key(plaintext)
    _note(
        f"issued {API_KEY_PREFIX}_{api_key_id(plaintext)} for tenant {args.tenant} "
        f"({args.label}); it is shown only this once"
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    if args.tenant is not None:
        check_id("tenant id", args.tenant)
    with gateway_keys(load_settings(args.var_dir)) as store:
        keys = store.list_sync(args.tenant)
    now = datetime.now(UTC)
    document = {"apiKeys": [info.as_dict(now) for info in keys]}
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(render_table(document, LIST_COLUMNS))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    key_id = key_id_of(args.key)
    settings = load_settings(args.var_dir)
    with gateway_keys(settings) as store:
        try:
            info = store.revoke_sync(key_id)
        except ApiKeyNotFound as exc:
            raise KeyNotFound(str(exc)) from exc
    _note(
        f"revoked {info.prefix} of tenant {info.tenant_id} ({info.label}); gateways refuse it "
        f"within {settings.api_key_cache_seconds:g} s (GATE4_API_KEY_CACHE_SECONDS)"
    )
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    key_id = key_id_of(args.key)
    if args.grace < 0:
        raise UsageError("--grace must be 0 or more seconds")
    with gateway_keys(load_settings(args.var_dir)) as store:
        try:
            plaintext, new = store.rotate_sync(key_id, timedelta(seconds=args.grace))
            old = _find(store.list_sync(new.tenant_id), key_id)
        except ApiKeyNotFound as exc:
            raise KeyNotFound(str(exc)) from exc
    _print_key(plaintext)
    until = old.as_dict(datetime.now(UTC))["expiresAt"] if old else None
    _note(
        f"issued {new.prefix} for tenant {new.tenant_id} ({new.label}), shown only this once; "
        f"{API_KEY_PREFIX}_{key_id} works until {until}"
    )
    return EXIT_OK


def _find(keys: list[ApiKeyInfo], key_id: str) -> ApiKeyInfo | None:
    return next((k for k in keys if k.key_id == key_id), None)
