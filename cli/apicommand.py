"""What every Platform API command of `gate4` shares: options, client, output, exit codes.

A group module (sessions, turns, deployments, orders, risk, killswitch, audit) declares each
command with `add_command`: its verb, the operationIds it calls, whether it has a side
effect, and a `run(ctx)` that calls `gate4_client` and returns the document to print. This
module then does the rest the same way for all of them:

- configuration from GATE4_API_BASE, GATE4_TOKEN, GATE4_API_KEY, GATE4_TENANT_ID,
  GATE4_USER_ID (flags --tenant-id, --user-id win; secrets come only from the environment or
  a --credentials file, never from a flag, so they stay out of shell history, process lists
  and chat); the credentials go only to the API base they were issued for (GATE4_API_BASE):
  an `--api-base` naming another gateway is refused unless --credentials gives its own;
- the OpenClaw lane (`--lane skill|cli`, GATE4_CLIENT_LANE; `skill` by default inside
  OpenClaw's exec tool, which sets OPENCLAW_SHELL): with a lane the command sends
  `X-Channel: openclaw` and `sessions create` records `metadata.clientLane`;
- output: the API's JSON document on stdout (`--output json`, the default) or a table
  (`--output table`); the requestId on stderr;
- errors: the problem document on stdout, one line with status, code, requestId (and
  outcome) on stderr, and the exit code of cli/errors.py for the status and code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cli.envfile import read_env_file
from cli.errors import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_KILL_SWITCH,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_RISK_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    GATEWAY_UNREACHABLE,
    CliError,
    UsageError,
)
from gate4_client import (
    ApiError,
    ConfigurationError,
    Credentials,
    Gate4Client,
    RetryPolicy,
    TransportError,
    new_idempotency_key,
    new_request_id,
    same_api_base,
)
from gate4_client._core import (
    DEFAULT_API_BASE,
    ENV_API_BASE,
    ENV_API_KEY,
    ENV_CHANNEL,
    ENV_TENANT_ID,
    ENV_TOKEN,
    ENV_USER_ID,
)

ENV_CLIENT_LANE = "GATE4_CLIENT_LANE"
#: What --credentials FILE supplies: the API base and the credentials issued for it.
CREDENTIAL_VARIABLES = (ENV_API_BASE, ENV_TOKEN, ENV_API_KEY, ENV_TENANT_ID, ENV_USER_ID)
#: Set by OpenClaw in every command its exec tool runs.
ENV_OPENCLAW_SHELL = "OPENCLAW_SHELL"
LANES = ("skill", "cli", "none")
OPENCLAW_CHANNEL = "openclaw"
DEFAULT_CHANNEL = "cli"
OUTPUTS = ("json", "table")

#: The code of a command that never got an answer from the gateway.
UNREACHABLE = GATEWAY_UNREACHABLE
READ_MARK = "(read)"
WRITE_MARK = "(side effect)"

#: Which exit code an API status (and, for 422, its code) maps to.
_EXIT_BY_STATUS = {
    400: EXIT_USAGE,
    401: EXIT_AUTH,
    403: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    409: EXIT_CONFLICT,
    422: EXIT_RISK_REJECTED,
    423: EXIT_KILL_SWITCH,
    429: EXIT_UNAVAILABLE,
    502: EXIT_UNAVAILABLE,
    503: EXIT_UNAVAILABLE,
    504: EXIT_UNAVAILABLE,
}


def exit_code_for(status: int, code: str) -> int:
    if status == 422 and code == "IDEMPOTENCY_KEY_REUSED":
        return EXIT_CONFLICT
    return _EXIT_BY_STATUS.get(status, EXIT_FAILURE)


class ApiCallFailed(CliError):
    """The Platform API refused or failed the command; the exit code follows its status.
    The message starts with what failed: `<status> <CODE>`, or `GATEWAY_UNREACHABLE`."""

    def __init__(self, message: str, exit_code: int, code: str) -> None:
        super().__init__(message, code=code)
        self.exit_code = exit_code

    def line(self) -> str:
        return self.message


@dataclass
class Context:
    """What a command's `run` gets: the client and the parsed arguments."""

    client: Gate4Client
    args: argparse.Namespace
    request_id: str
    lane: str | None
    tenant_id: str
    idempotency_key: str | None = None

    def new_idempotency_key(self) -> str:
        """The command's Idempotency-Key: --idempotency-key when given, else a fresh one."""
        if self.idempotency_key is None:
            given = getattr(self.args, "idempotency_key", None)
            self.idempotency_key = given or new_idempotency_key()
        return self.idempotency_key


Run = Callable[[Context], Any]


# -- declaring commands ------------------------------------------------------------------


def common_options() -> argparse.ArgumentParser:
    """Options every API command accepts after its verb (`gate4 deployments get ID --output
    table`), so an allowlist pattern can match on `gate4 <group> <verb>` alone."""
    parent = argparse.ArgumentParser(add_help=False)
    opts = parent.add_argument_group("Platform API options")
    opts.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        default=os.environ.get("GATE4_OUTPUT") or "json",
        help="json (default): the API's document as is; table: for reading",
    )
    opts.add_argument(
        "--api-base",
        metavar="URL",
        help=f"gateway URL (default: ${ENV_API_BASE} or {DEFAULT_API_BASE}); credentials go "
        "only to the API base they were issued for, so another one needs --credentials",
    )
    opts.add_argument(
        "--credentials",
        dest="credentials_file",
        metavar="FILE",
        help="credentials file (the `export NAME=value` lines `gate4 dev credentials` prints) "
        f"whose {', '.join(CREDENTIAL_VARIABLES)} replace the environment's",
    )
    opts.add_argument("--tenant-id", metavar="ID", help=f"tenant (default: ${ENV_TENANT_ID})")
    opts.add_argument("--user-id", metavar="ID", help=f"user (default: ${ENV_USER_ID})")
    opts.add_argument(
        "--lane",
        choices=LANES,
        help=f"OpenClaw lane this command acts in (default: ${ENV_CLIENT_LANE}; 'skill' inside "
        "OpenClaw's exec tool; otherwise none): skill or cli send X-Channel: openclaw and mark "
        "new sessions' metadata.clientLane",
    )
    opts.add_argument(
        "--channel",
        metavar="NAME",
        help=f"X-Channel header (default: ${ENV_CHANNEL}; 'openclaw' with a lane, else "
        f"'{DEFAULT_CHANNEL}')",
    )
    opts.add_argument(
        "--client-request-id",
        metavar="ID",
        help="X-Request-Id to send (8-128 of A-Z a-z 0-9 . _ : -; default: a fresh req_<hex>)",
    )
    opts.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per attempt (default 10)"
    )
    opts.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries with backoff when safe (same X-Request-Id and Idempotency-Key; default 3)",
    )
    return parent


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    verb: str,
    *,
    help: str,
    run: Run,
    operations: Sequence[str],
    side_effect: bool,
    description: str | None = None,
    columns: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """Adds one API command. `operations` are the operationIds it may call (tests check
    them against the OpenAPI document); `side_effect` marks commands that change platform
    state, which OpenClaw users should put behind an exec approval."""
    mark = WRITE_MARK if side_effect else READ_MARK
    parser = commands.add_parser(
        verb,
        help=f"{help} {mark}",
        description=(description or help[:1].upper() + help[1:] + ".")
        + (
            " Side effect: changes platform state."
            if side_effect
            else " Read only: no side effect."
        ),
        parents=[common_options()],
    )
    parser.set_defaults(
        handler=partial(execute, run, tuple(columns)),
        operations=tuple(operations),
        side_effect=side_effect,
    )
    return parser


def add_idempotency_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="Idempotency-Key (8-255 of A-Z a-z 0-9 . _ : -; default: a fresh UUID). Re-run with "
        "the key an error printed to retry the same command safely",
    )


def read_json_file(path: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must hold a JSON object")
    return data


# -- running commands --------------------------------------------------------------------


def resolve_lane(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    lane = args.lane or env.get(ENV_CLIENT_LANE) or ("skill" if env.get(ENV_OPENCLAW_SHELL) else "")
    if lane and lane not in LANES:
        raise UsageError(f"{ENV_CLIENT_LANE}={lane!r}: use one of {', '.join(LANES)}")
    return None if lane in ("", "none") else lane


def resolve_channel(args: argparse.Namespace, env: Mapping[str, str], lane: str | None) -> str:
    return args.channel or env.get(ENV_CHANNEL) or (OPENCLAW_CHANNEL if lane else DEFAULT_CHANNEL)


def credentials_env(args: argparse.Namespace, env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment, with the credential variables of --credentials FILE when given."""
    path = getattr(args, "credentials_file", None)
    if not path:
        return env
    if not Path(path).is_file():
        raise UsageError(f"--credentials {path}: no such file")
    try:
        given = read_env_file(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--credentials {path}: cannot read it ({exc})") from exc
    if not given.get(ENV_API_BASE):
        raise UsageError(
            f"--credentials {path}: no {ENV_API_BASE} in it (a file of `export NAME=value` "
            "lines); credentials are always given with the API base they were issued for"
        )
    return {**env, **{name: given.get(name, "") for name in CREDENTIAL_VARIABLES}}


def build_context(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Context:
    env = credentials_env(args, os.environ if env is None else env)
    # The token and the key were issued for this API base and are sent nowhere else: a
    # prompt-injected `--api-base http://elsewhere` must not carry them off.
    issued_for = (env.get(ENV_API_BASE) or DEFAULT_API_BASE).rstrip("/")
    api_base = (args.api_base or issued_for).rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        raise UsageError(f"the API base must be an http:// or https:// URL, not {api_base!r}")
    if not same_api_base(api_base, issued_for):
        raise UsageError(
            f"refusing to send the credentials issued for {issued_for} ({ENV_API_BASE}) to "
            f"--api-base {api_base}: credentials go only to the API base they were issued for; "
            "for another gateway give its own credentials with --credentials FILE"
        )
    tenant_id = args.tenant_id or env.get(ENV_TENANT_ID, "")
    user_id = args.user_id or env.get(ENV_USER_ID, "")
    values = {
        ENV_TOKEN: env.get(ENV_TOKEN, ""),
        ENV_API_KEY: env.get(ENV_API_KEY, ""),
        ENV_TENANT_ID: tenant_id,
        ENV_USER_ID: user_id,
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise UsageError(
            f"missing configuration: set {', '.join(missing)} in the environment "
            "(locally: `source var/dev-credentials.env` after `make run`)"
        )
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout > 0")
    lane = resolve_lane(args, env)
    client = Gate4Client(
        api_base,
        credentials=Credentials(
            token=values[ENV_TOKEN],
            api_key=values[ENV_API_KEY],
            tenant_id=tenant_id,
            user_id=user_id,
            api_base=issued_for,
        ),
        channel=resolve_channel(args, env, lane),
        timeout=args.timeout,
        retry=RetryPolicy(max_retries=args.retries),
    )
    return Context(
        client=client,
        args=args,
        request_id=args.client_request_id or new_request_id(),
        lane=lane,
        tenant_id=tenant_id,
    )


def execute(run: Run, columns: tuple[str, ...], args: argparse.Namespace) -> int:
    """The handler of every API command (see `add_command`)."""
    ctx = build_context(args)
    creds = ctx.client.config.credentials
    secrets = (creds.token, creds.api_key) if creds else ()
    out = partial(_write, secrets=secrets)
    try:
        with ctx.client:
            document = run(ctx)
    except ApiError as exc:
        out(sys.stdout, render(exc.problem, args.output))
        raise ApiCallFailed(
            _redact(_error_line(exc, ctx), secrets), exit_code_for(exc.status, exc.code), exc.code
        ) from exc
    except TransportError as exc:
        problem = {
            "type": "urn:gate4:client:unreachable",
            "title": "Platform API unreachable",
            "detail": exc.message,
            "code": UNREACHABLE,
            "requestId": exc.request_id,
        }
        out(sys.stdout, render(problem, args.output))
        message = f"{UNREACHABLE}: {exc.message} (requestId {exc.request_id}{_key_hint(ctx)})"
        raise ApiCallFailed(_redact(message, secrets), EXIT_UNAVAILABLE, UNREACHABLE) from exc
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from exc
    out(sys.stdout, render(document, args.output, columns))
    out(sys.stderr, f"gate4: requestId {ctx.request_id}{_key_hint(ctx, prefix=', ')}")
    return EXIT_OK


def _error_line(exc: ApiError, ctx: Context) -> str:
    text = f"{exc.status} {exc.code}"
    if exc.detail:
        text += f": {exc.detail}"
    extras = [f"requestId {exc.request_id}"]
    if exc.outcome:
        extras.append(f"outcome {exc.outcome}")
    if exc.trace_id:
        extras.append(f"traceId {exc.trace_id}")
    return f"{text} ({', '.join(extras)}{_key_hint(ctx)})"


def _key_hint(ctx: Context, prefix: str = "; ") -> str:
    if ctx.idempotency_key is None:
        return ""
    return f"{prefix}idempotency key {ctx.idempotency_key}"


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _write(stream: Any, text: str, *, secrets: Iterable[str]) -> None:
    stream.write(_redact(text, secrets).rstrip("\n") + "\n")
    stream.flush()


# -- output ------------------------------------------------------------------------------


def render(document: Any, output: str, columns: Sequence[str] = ()) -> str:
    if isinstance(document, str):
        return document
    if output == "table":
        return render_table(document, columns)
    return json.dumps(document, indent=2, ensure_ascii=False)


def render_table(document: Any, columns: Sequence[str] = ()) -> str:
    """With `columns` (the list commands), the document's list of objects as rows and columns
    plus its other fields below; otherwise `field  value` lines, nested values as JSON."""
    if isinstance(document, dict):
        lists = [k for k, v in document.items() if _is_rows(v)]
        if columns and len(lists) == 1:
            key = lists[0]
            rows: list[dict[str, Any]] = document[key]
            footer = [
                f"{k}: {_cell(v)}" for k, v in document.items() if k != key and v not in ("", None)
            ]
            table = [_grid(rows, columns)] if rows else []
            return "\n".join([f"{key}: {len(rows)}", *table, *footer])
        width = max((len(k) for k in document), default=0)
        return "\n".join(f"{k.ljust(width)}  {_cell(v)}".rstrip() for k, v in document.items())
    return json.dumps(document, ensure_ascii=False)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _grid(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)
