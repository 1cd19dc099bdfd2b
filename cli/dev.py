"""`gate4 dev`: run the whole platform locally (`dev up`) and mint dev credentials.

`dev up` is what `make run` calls. It drives cli.devstack's processes one by one (instead of
`Stack.start`) only to report each as it becomes ready, in Stack's order: services first,
gateway last. `Stack.stop` stops the gateway first, so no new traffic reaches a draining
service, and audit last, so the others can still ship their outbox to it.

`dev scale-out` runs cli.devstack's ScaleOut (replicas on PostgreSQL) the same way; the
replica tests start that same ScaleOut.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from types import FrameType
from typing import NoReturn

import httpx
import psycopg
from sqlalchemy.engine import make_url

from cli.credentials import (
    CREDENTIALS_FILE,
    DEFAULT_TTL_SECONDS,
    DEMO_ROLES,
    DEMO_TENANT,
    DEMO_USER,
    DevCredentials,
    issue_credentials,
    write_env_file,
)
from cli.devstack import (
    GATEWAY,
    SCALE_OUT,
    ManagedProcess,
    MigrationFailed,
    ScaleOut,
    Stack,
    ensure_database,
    free_port,
    settings_from,
)
from cli.envfile import read_env_file
from cli.errors import EXIT_OK, PROCESS_FAILED, CliError, UsageError
from cli.settings import http_base, load_settings, require_dev
from services.runtime.config import SERVICES, Settings
from services.runtime.roles import PLATFORM as ROLES
from services.runtime.storage.database import is_postgres_url

NAME = "dev"
HELP = "run the platform locally and mint dev credentials"

START_TIMEOUT_SECONDS = 60.0
WATCH_INTERVAL_SECONDS = 0.5
LOG_TAIL_LINES = 15
REPEAT_SIGNAL_SECONDS = 2.0
# The documented default risk policy of the demo tenant, so it can trade at once: package
# data, cli/demo-risk-policy.json in the source tree.
DEMO_RISK_POLICY: Traversable = files("cli") / "demo-risk-policy.json"
#: `dev scale-out`'s database when none is configured: the local server, a database of its own.
SCALE_OUT_DATABASE = "postgresql://postgres@127.0.0.1:5432/gate4_scaleout"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Each service's metrics port, unless GATE4_<NAME>_METRICS_PORT sets one: its gRPC port + this.
METRICS_PORT_OFFSET = 1000
METRICS = " metrics"

RUNBOOK_CURL = """\
curl -sS -X POST "$PLATFORM_API_BASE/v2/conversations/sessions" \\
  -H "Authorization: Bearer $TOKEN" \\
  -H "X-API-Key: $API_KEY" \\
  -H "X-Tenant-Id: $TENANT_ID" \\
  -H "X-User-Id: $USER_ID" \\
  -H "Content-Type: application/json" \\
  -d '{"channel":"openclaw","topic":"incident-triage","metadata":{"notificationsOptIn":true}}'"""


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="start the four services and the gateway, seed the demo tenant, stay in foreground",
        description=(
            "Start audit, risk, execution and conversation, then the gateway, on 127.0.0.1 at "
            "the ports of GATE4_*_ADDR and GATE4_GATEWAY_PORT (SQLite under the var dir unless "
            "a GATE4_*DATABASE_URL is set; with GATE4_TLS=tls or mtls, over TLS with a dev CA "
            "created under GATE4_TLS_DIR, default var/tls). Once GET /readyz answers 200, seed the "
            "demo tenant (its API key is reused while valid) and "
            f"write <var dir>/{CREDENTIALS_FILE}. Ctrl-C, SIGTERM or SIGHUP stops everything."
        ),
    )
    up.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="state directory: databases, logs/, traces/, credentials (default: GATE4_VAR_DIR "
        "or ./var)",
    )
    up.set_defaults(handler=cmd_up)

    replicas = ", ".join(f"{count} {kind}" for kind, count in SCALE_OUT.items())
    scale = commands.add_parser(
        "scale-out",
        help="run replicas (2 gateways, 2 risk, 2 execution, ...) on PostgreSQL, in foreground",
        description=(
            f"Start {replicas} processes on one PostgreSQL database, each on a free loopback "
            "port, callers balancing over every replica of a service (round_robin). Creates "
            "the database if missing and applies the migrations once before any process "
            "starts. Seeds the demo tenant through gateway-1 and writes "
            f"<var dir>/{CREDENTIALS_FILE}. A replica that dies (kill -9 <pid>) is reported "
            "and the others carry on; Ctrl-C, SIGTERM or SIGHUP stops everything."
        ),
    )
    scale.add_argument(
        "--postgres",
        default=None,
        metavar="URL",
        help="database every process uses (default: GATE4_DATABASE_URL, else "
        f"{SCALE_OUT_DATABASE})",
    )
    scale.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="logs/, traces/ and credentials (default: <GATE4_VAR_DIR or ./var>/scale-out)",
    )
    scale.set_defaults(handler=cmd_scale_out)

    creds = commands.add_parser(
        "credentials",
        help="mint a token and issue an API key for any tenant, user and roles",
        description=(
            "Mint a bearer token signed with GATE4_JWT_SECRET and issue an API key in the "
            "gateway's database, then print shell `export` lines (source them, or eval them). "
            "Dev only: refused when GATE4_ENV=prod."
        ),
    )
    creds.add_argument("--tenant", required=True, help="tenant id, e.g. demo")
    creds.add_argument("--user", required=True, help="user id, e.g. demo-user")
    creds.add_argument(
        "--roles", required=True, help=f"comma-separated roles from: {','.join(ROLES)}"
    )
    creds.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL_SECONDS,
        metavar="SECONDS",
        help=f"token lifetime (default: {DEFAULT_TTL_SECONDS}, 12 h)",
    )
    creds.add_argument(
        "--label", default=None, help="API key label (default: dev-credentials:<user>)"
    )
    creds.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="var dir of the gateway whose database gets the key (default: GATE4_VAR_DIR or "
        "./var); match `dev up --var-dir`",
    )
    creds.set_defaults(handler=cmd_credentials)


# -- dev credentials ----------------------------------------------------------------------


def cmd_credentials(args: argparse.Namespace) -> int:
    settings = load_settings(args.var_dir)
    creds = issue_credentials(
        settings,
        api_base=http_base(settings.gateway_host, settings.gateway_port),
        tenant_id=args.tenant,
        user_id=args.user,
        roles=args.roles,
        ttl_seconds=args.ttl,
        label=args.label,
    )
    sys.stdout.write(creds.env_text())
    return EXIT_OK


# -- dev up -------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """A stop signal; a BaseException so no library's `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ProcessFailed(CliError):
    code = PROCESS_FAILED

    def __init__(self, proc: ManagedProcess, what: str) -> None:
        message = f"{proc.name} {what}; see {display(proc.log_path)}"
        tail = log_tail(proc.log_path)
        if tail:
            message += f"\n  last lines of {display(proc.log_path)}:\n" + "\n".join(
                f"    {line}" for line in tail
            )
        super().__init__(message)


def say(text: str = "") -> None:
    # Flushed per line: `make run` and tests read this through a pipe. A closed terminal or
    # pipe must not abort a shutdown half way, so write errors are dropped.
    with suppress(OSError):
        print(text, flush=True)


def display(path: Traversable) -> str:
    """Paths relative to the working directory when inside it, as a user would type them."""
    if not isinstance(path, Path):
        return str(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def env_var_for(name: str) -> str:
    if name.endswith(METRICS):
        return f"GATE4_{name.removesuffix(METRICS).upper()}_METRICS_PORT"
    return "GATE4_GATEWAY_PORT" if name == GATEWAY else f"GATE4_{name.upper()}_ADDR"


def configured_ports(settings: Settings) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name in SERVICES:
        addr = settings.service_addr(name)
        _host, sep, port_text = addr.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"{env_var_for(name)}={addr!r} is not host:port")
        ports[name] = int(port_text)
    ports[GATEWAY] = settings.gateway_port
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise UsageError(
                f"{env_var_for(seen[port])} and {env_var_for(name)} both use port {port}"
            )
        seen[port] = name
    return ports


def metrics_ports(settings: Settings, ports: dict[str, int]) -> dict[str, int]:
    """Each service's metrics port, keyed "<name> metrics": GATE4_<NAME>_METRICS_PORT when
    set, else its gRPC port + METRICS_PORT_OFFSET (a free one past 65535), so every service
    has one locally."""
    found: dict[str, int] = {}
    for name in SERVICES:
        addr = settings.metrics_addr(name)
        derived = ports[name] + METRICS_PORT_OFFSET
        found[name + METRICS] = addr[1] if addr else derived if derived < 65536 else free_port()
    seen = {port: name for name, port in ports.items()}
    for name, port in found.items():
        if port in seen:
            raise UsageError(
                f"{env_var_for(seen[port])} and {env_var_for(name)} both use port {port}"
            )
        seen[port] = name
    return found


def check_ports_free(ports: dict[str, int]) -> None:
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: a port in TIME_WAIT after a restart is free, a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise CliError(
                    f"port {port} (for {name}, from {env_var_for(name)}) is already in use "
                    f"({exc.strerror}); stop what holds it, e.g. an earlier `gate4 dev up`, "
                    f"or set {env_var_for(name)} to a free port"
                ) from exc


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted, so every wait below is interruptible.

    The children run in their own sessions (a Ctrl-C must not hit them before the gateway
    drains), so a closed terminal (SIGHUP) must stop them through us too. One Ctrl-C under
    `make run` can arrive more than once (the terminal signals the whole foreground group,
    and a wrapper such as uv may forward its own copy), so repeats within
    REPEAT_SIGNAL_SECONDS of the first are ignored; a later one kills what is left.
    """
    first_at: float | None = None

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal first_at
        now = time.monotonic()
        if first_at is not None and now - first_at < REPEAT_SIGNAL_SECONDS:
            return
        first_at = now
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            # After a stop on signal the process is exiting: a late copy of that signal
            # must not turn the clean exit into a KeyboardInterrupt.
            signal.signal(sig, signal.SIG_IGN if first_at is not None else old)


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(args.var_dir)
    require_dev(settings, "dev up")
    # Absolute, so the children and the seeding agree on the databases whatever their cwd.
    settings = settings.model_copy(update={"var_dir": settings.var_dir.resolve()})
    ports = configured_ports(settings)
    metrics = metrics_ports(settings, ports)
    check_ports_free({**ports, **metrics})
    metrics_env = {env_var_for(name): str(port) for name, port in metrics.items()}
    stack = Stack(settings.var_dir, ports=ports, env=metrics_env)

    with signals_raise():
        try:
            start(stack, settings)
            dead = watch(stack)
            raise ProcessFailed(dead, f"exited unexpectedly ({describe_exit(dead)})")
        except Interrupted as exc:
            say()
            say(f"{signal.Signals(exc.signum).name} received: stopping")
            return EXIT_OK
        finally:
            stop(stack)


def start(stack: Stack, settings: Settings) -> DevCredentials:
    var_dir = settings.var_dir
    say(f"gate4 dev up: var dir {display(var_dir)}, {storage_summary(settings)}")
    stack.prepare()
    if settings.tls != "off":
        tls_dir = display(settings.tls_path())
        say(f"  internal gRPC over {settings.tls}, with the dev CA in {tls_dir}")
    services = [p for name, p in stack.processes.items() if name != GATEWAY]
    say(f"starting {', '.join(p.name for p in services)} (logs in {display(var_dir / 'logs')})")
    for proc in services:
        proc.start()
    for proc in services:
        wait_ready(proc)
        metrics = proc.env.get(env_var_for(proc.name + METRICS))
        scraped = f", metrics on http://127.0.0.1:{metrics}/metrics" if metrics else ""
        say(f"  {proc.name:<13} ready on 127.0.0.1:{proc.port} (pid {pid(proc)}){scraped}")

    gateway = stack.processes[GATEWAY]
    say("starting gateway")
    gateway.start()
    wait_ready(gateway)
    say(f"  {'gateway':<13} ready on {stack.gateway_url} (pid {pid(gateway)})")
    wait_readyz(stack)
    say(f"  {'gateway':<13} GET /readyz answered 200")

    creds = seed_demo_tenant(settings, stack.gateway_url)
    seed_demo_policy(creds)
    print_banner(stack, creds)
    return creds


def storage_summary(settings: Settings) -> str:
    urls = [settings.database_url_for(name) for name in (*SERVICES, GATEWAY)]
    if all(url.startswith("sqlite:") for url in urls):
        return "SQLite databases in it"
    return "databases from GATE4_*DATABASE_URL"


def pid(proc: ManagedProcess) -> int:
    return proc.proc.pid if proc.proc is not None else -1


def describe_exit(proc: ManagedProcess) -> str:
    code = proc.proc.returncode if proc.proc is not None else None
    if code is None:
        return "not started"
    if code < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def wait_ready(proc: ManagedProcess) -> None:
    try:
        proc.wait_ready(START_TIMEOUT_SECONDS)
    except RuntimeError as exc:  # the process exited
        raise ProcessFailed(proc, f"exited before it was ready ({describe_exit(proc)})") from exc
    except TimeoutError as exc:
        raise ProcessFailed(proc, f"was not ready after {START_TIMEOUT_SECONDS:.0f}s") from exc


def wait_readyz(stack: Stack, gateway: str = GATEWAY) -> None:
    """/healthz says the gateway serves; /readyz says every service answers SERVING behind it."""
    url = f"http://127.0.0.1:{stack.processes[gateway].port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in stack.processes.values():
            if not proc.alive():
                raise ProcessFailed(proc, f"exited unexpectedly ({describe_exit(proc)})")
        try:
            resp = httpx.get(f"{url}/readyz", timeout=2.0)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}"
        else:
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:300]}"
        time.sleep(0.2)
    raise ProcessFailed(
        stack.processes[gateway],
        f"GET /readyz did not answer 200 within {START_TIMEOUT_SECONDS:.0f}s (last: {last})",
    )


def seed_demo_tenant(settings: Settings, api_base: str) -> DevCredentials:
    """The demo tenant `make run` promises: every role, 12 h, written to the credentials file.
    The API key of the previous run's file is kept while valid; the token is always fresh."""
    path = settings.var_dir / CREDENTIALS_FILE
    previous_key = read_env_file(path).get("GATE4_API_KEY")
    creds = issue_credentials(
        settings,
        api_base=api_base,
        tenant_id=DEMO_TENANT,
        user_id=DEMO_USER,
        roles=DEMO_ROLES,
        ttl_seconds=DEFAULT_TTL_SECONDS,
        label="dev up demo",
        reuse_api_key=previous_key,
    )
    write_env_file(path, creds)
    key = "API key reused" if creds.api_key == previous_key else "new API key"
    # Names and paths only: the token and key are in the file, never on the console.
    say(
        f"  {'demo tenant':<13} tenant {creds.tenant_id}, user {creds.user_id}, roles "
        f"{','.join(creds.roles)}; token valid {DEFAULT_TTL_SECONDS // 3600} h; {key}; "
        f"credentials in {display(path)} (mode 0600)"
    )
    return creds


def seed_demo_policy(creds: DevCredentials) -> None:
    """Puts the demo risk policy through the Platform API unless the tenant already has one
    (a restart keeps what the user changed). Never fatal: without a policy, orders are
    refused (fail closed) and the user can put one with PUT /v1/risk/policy."""
    headers = {
        "Authorization": f"Bearer {creds.token}",
        "X-API-Key": creds.api_key,
        "X-Tenant-Id": creds.tenant_id,
        "X-User-Id": creds.user_id,
    }
    try:
        with httpx.Client(base_url=creds.api_base, headers=headers, timeout=10.0) as client:
            current = client.get("/v1/risk/policy")
            if current.status_code == 200:
                outcome = f"kept active version {current.json().get('version')}"
            else:
                if current.status_code != 404:
                    current.raise_for_status()
                body = {
                    "policy": json.loads(DEMO_RISK_POLICY.read_text(encoding="utf-8")),
                    "reason": "gate4 dev up: documented demo default",
                }
                put = client.put("/v1/risk/policy", json=body)
                put.raise_for_status()
                outcome = f"put {display(DEMO_RISK_POLICY)} as version {put.json().get('version')}"
    except (httpx.HTTPError, OSError, ValueError) as exc:
        say(
            f"  {'risk policy':<13} NOT seeded ({type(exc).__name__}): orders are refused "
            "until one is put with PUT /v1/risk/policy"
        )
        return
    say(f"  {'risk policy':<13} {outcome}")


def print_banner(stack: Stack, creds: DevCredentials) -> None:
    var_dir = stack.var_dir
    creds_path = display(var_dir / CREDENTIALS_FILE)
    say()
    say(f"Gate4 Platform is up: {stack.gateway_url}")
    say(f"  logs         {display(var_dir / 'logs')}/<name>.log  ({', '.join(stack.processes)})")
    say(f"  traces       {display(var_dir / 'traces')}/")
    say(f"  credentials  source {creds_path}  (tenant {creds.tenant_id}, user {creds.user_id})")
    say("  try the runbook's repro:")
    say(f"    source {creds_path}")
    for line in RUNBOOK_CURL.splitlines():
        say(f"    {line}")
    say("Press Ctrl-C to stop.")


def watch(stack: Stack) -> ManagedProcess:
    """Blocks until a process exits; returns it."""
    while True:
        for proc in stack.processes.values():
            if not proc.alive():
                return proc
        time.sleep(WATCH_INTERVAL_SECONDS)


def stop(stack: Stack) -> None:
    running = [name for name in reversed(stack.processes) if stack.processes[name].alive()]
    if running:
        say(f"stopping {', '.join(running)} (SIGTERM, waiting for each to drain)")
    try:
        stack.stop()
    except Interrupted:
        # A second Ctrl-C: the user wants out now.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        say("interrupted again: killing what is left")
        for proc in stack.processes.values():
            proc.kill()
    for name in running:
        proc = stack.processes[name]
        code = proc.proc.returncode if proc.proc is not None else None
        # uvicorn re-raises the SIGTERM it drained on, so -SIGTERM is a clean stop too.
        if code not in (0, -signal.SIGTERM, None):
            say(
                f"  {name} did not stop cleanly ({describe_exit(proc)}); "
                f"see {display(proc.log_path)}"
            )
    if running:
        say("stopped")


# -- dev scale-out --------------------------------------------------------------------------


def cmd_scale_out(args: argparse.Namespace) -> int:
    settings = load_settings()
    require_dev(settings, "dev scale-out")
    var_dir = (args.var_dir or settings.var_dir / "scale-out").resolve()
    url = args.postgres or settings.database_url or SCALE_OUT_DATABASE
    if not is_postgres_url(url):
        raise UsageError(f"--postgres must be a postgresql:// URL, not {redacted(url)!r}")
    scale = ScaleOut(var_dir, url)

    with signals_raise():
        try:
            start_scale_out(scale)
            watch_replicas(scale)
        except Interrupted as exc:
            say()
            say(f"{signal.Signals(exc.signum).name} received: stopping")
            return EXIT_OK
        finally:
            stop(scale)


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def start_scale_out(scale: ScaleOut) -> DevCredentials:
    say(f"gate4 dev scale-out: var dir {display(scale.var_dir)}, {redacted(scale.database_url)}")
    try:
        created = ensure_database(scale.database_url)
    except (psycopg.Error, ValueError) as exc:
        raise CliError(f"cannot reach or create the database: {exc}".strip()) from exc
    say(f"  {'database':<13} {'created' if created else 'exists'}")
    say(
        f"applying migrations once (log {display(scale.migrations_log)}), then starting "
        f"{', '.join(scale.processes)} (logs in {display(scale.var_dir / 'logs')})"
    )

    def ready(proc: ManagedProcess) -> None:
        wait_ready(proc)
        where = (
            f"http://127.0.0.1:{proc.port}"
            if proc.component == GATEWAY
            else f"127.0.0.1:{proc.port}"
        )
        metrics = proc.env.get(f"GATE4_{proc.component.upper()}_METRICS_PORT")
        scraped = f"  metrics http://127.0.0.1:{metrics}/metrics" if metrics else ""
        say(
            f"  {proc.name:<13} ready on {where:<22} pid {pid(proc):<7} "
            f"log {display(proc.log_path)}{scraped}"
        )

    try:
        scale.start(START_TIMEOUT_SECONDS, wait=ready)
    except MigrationFailed as exc:
        raise CliError(str(exc)) from exc
    for gateway in scale.gateways:
        wait_readyz(scale, gateway.name)
    say(f"  {'gateways':<13} GET /readyz answered 200 on each")

    settings = settings_from(scale.env)
    creds = seed_demo_tenant(settings, scale.gateway_url)
    seed_demo_policy(creds)
    creds_path = display(scale.var_dir / CREDENTIALS_FILE)
    say()
    say(f"Gate4 Platform is up, scaled out: gateways {' and '.join(scale.gateway_urls)}")
    say(f"  credentials  source {creds_path}  (API base: gateway-1; the key works on both)")
    say(
        "  fail-over    kill -9 <pid> of a risk or execution replica: its callers move to the other"
    )
    say("Press Ctrl-C to stop.")
    return creds


def watch_replicas(scale: ScaleOut) -> NoReturn:
    """Reports each process that exits and keeps the others running (fail-over is the point);
    returns only on a stop signal, which raises."""
    reported: set[str] = set()
    while True:
        for name, proc in scale.processes.items():
            if name in reported or proc.alive():
                continue
            reported.add(name)
            left = [p.name for p in scale.replicas_of(proc.component) if p.alive()]
            carry = (
                f"{', '.join(left)} carries on"
                if left
                else f"no {proc.component} left: its calls fail until a restart"
            )
            say(f"  {name} exited ({describe_exit(proc)}); {carry}")
        time.sleep(WATCH_INTERVAL_SECONDS)
