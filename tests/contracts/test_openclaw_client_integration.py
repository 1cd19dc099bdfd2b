"""Runbook A: the OpenClaw client lane speaks the Platform API contract.

- The skill (clients/openclaw/skills/gate4-platform): frontmatter within OpenClaw's limits;
  every command it shows is one `gate4` invocation with plain arguments that the real CLI
  parser accepts and that calls only Platform API routes of the OpenAPI document.
- The Python client and the `gate4` CLI against a live gateway: canonical errors carry
  requestId, code and outcome; each outcome has its documented exit code; the lane is
  marked (`X-Channel: openclaw`, `metadata.clientLane`); no secret reaches any output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.errors import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_CONFLICT,
    EXIT_KILL_SWITCH,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_RISK_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from cli.main import build_parser
from gate4_client import (
    ROUTES,
    AsyncGate4Client,
    AuthenticationError,
    Credentials,
    NotFoundError,
    PermissionDeniedError,
    RiskRejectedError,
)
from gate4_client._core import SAFE_OPERATIONS
from tests.support.live import (
    CliResult,
    RunCli,
    Tenant,
    gate4_stack,
    new_tenant,
    run_cli,
    run_gate4_process,
    tenant,
)
from tests.support.stack import LiveStack

__all__ = ["gate4_stack", "run_cli", "tenant"]

ROOT = Path(__file__).resolve().parents[2]
SKILL_DIR = ROOT / "clients" / "openclaw" / "skills" / "gate4-platform"
SKILL = SKILL_DIR / "SKILL.md"
REFERENCES = sorted((SKILL_DIR / "references").glob("*.md"))
OPENAPI = ROOT / "gateway" / "platform-api.openapi.yaml"
DEMO_POLICY = ROOT / "cli" / "demo-risk-policy.json"
SHELL_OPERATORS = ("|", "&&", "||", ";", ">", "<", "$(", "`", "<<")


def frontmatter_and_body(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, flags=re.S)
    assert match, "SKILL.md must open with a YAML frontmatter block"
    front = yaml.safe_load(match.group(1))
    assert isinstance(front, dict)
    return front, match.group(2)


def code_lines(markdown: str) -> list[str]:
    """Every non-empty line of the fenced code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def gate4_commands(markdown: str) -> list[str]:
    commands = [line for line in code_lines(markdown) if line.startswith("gate4 ")]
    inline = re.findall(r"`(gate4 [^`]+)`", markdown)  # inline commands in the prose
    return commands + [c for c in inline if not c.endswith("*")]  # `... *`: allowlist patterns


def parse(command: str) -> argparse.Namespace:
    argv = shlex.split(command)
    assert argv[0] == "gate4"
    return build_parser().parse_args(argv[1:])


def contract_operations() -> dict[str, tuple[str, str]]:
    document = yaml.safe_load(OPENAPI.read_text())
    return {
        op["operationId"]: (method.upper(), path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict) and "operationId" in op
    }


def api_commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf command of the CLI that calls the Platform API, by its words."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        if parser.get_default("operations") is not None:
            found[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))

    walk(build_parser(), ())
    return found


# -- the skill ------------------------------------------------------------------------------


def test_skill_frontmatter_is_what_openclaw_accepts() -> None:
    front, _body = frontmatter_and_body(SKILL)
    assert set(front) == {"name", "description", "metadata"}
    name = front["name"]
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= 64
    assert name == SKILL_DIR.name
    description = front["description"]
    assert isinstance(description, str) and 0 < len(description) <= 1024
    assert "<" not in description and ">" not in description
    assert "openclaw" in description and "gate4" in description
    openclaw = front["metadata"]["openclaw"]
    assert openclaw["requires"]["bins"] == ["gate4"]
    env = openclaw["requires"]["env"]
    assert env == [
        "GATE4_API_BASE",
        "GATE4_TOKEN",
        "GATE4_API_KEY",
        "GATE4_TENANT_ID",
        "GATE4_USER_ID",
    ]
    assert openclaw["primaryEnv"] in env
    # OpenClaw re-parses metadata as JSON: the frontmatter line must be a JSON object.
    line = next(li for li in SKILL.read_text().splitlines() if li.startswith("metadata:"))
    assert json.loads(line.removeprefix("metadata:")) == front["metadata"]


def test_every_command_the_skill_runs_is_one_gate4_call_with_plain_arguments() -> None:
    _front, body = frontmatter_and_body(SKILL)
    lines = code_lines(body)
    assert lines, "the skill shows no commands"
    for line in lines:
        assert line.startswith("gate4 "), f"not a gate4 command: {line}"
        assert not any(op in line for op in SHELL_OPERATORS), f"shell syntax in: {line}"
        assert "$" not in line, f"no variables (secrets come from the environment): {line}"


@pytest.mark.parametrize("path", [SKILL, *REFERENCES], ids=lambda p: p.name)
def test_every_command_shown_parses_and_calls_only_platform_api_routes(path: Path) -> None:
    contract = contract_operations()
    commands = gate4_commands(path.read_text(encoding="utf-8"))
    assert commands, f"{path.name} shows no gate4 command"
    for command in commands:
        if "[" in command:  # a synopsis with optional parts: check the part before them
            command = command.split(" [", 1)[0]
        args = parse(command)
        operations = args.operations
        assert operations, command
        for op in operations:
            assert op in contract, f"{command}: {op} is not in the OpenAPI document"
            assert ROUTES[op] == contract[op]
            assert contract[op][1].startswith(("/v1/", "/v2/")), (
                f"{command}: not a Platform API route"
            )


def test_the_skill_covers_the_lane_and_confirms_before_stopping() -> None:
    _front, body = frontmatter_and_body(SKILL)
    shown = {tuple(shlex.split(c)[1:3]) for c in gate4_commands(body)}
    for words in [
        ("sessions", "create"),
        ("turns", "send"),
        ("deployments", "get"),
        ("deployments", "stop"),
        ("orders", "get"),
        ("killswitch", "status"),
        ("audit", "events"),
    ]:
        assert words in shown, f"the skill does not show `gate4 {' '.join(words)}`"
    create = next(c for c in code_lines(body) if c.startswith("gate4 sessions create"))
    assert parse(create).lane == "skill"  # the skill lane marks its sessions
    stop_section = body.split("## Stop a deployment", 1)[1].split("\n## ", 1)[0]
    assert "confirm" in stop_section.split("gate4 deployments stop", 1)[0].lower()
    assert "CLI lane" in body and "{baseDir}/references/cli-lane.md" in body


def test_reads_and_side_effects_are_told_apart() -> None:
    """A read command calls only GETs (or the side-effect free validate); the reference lists
    every API command with its kind, so allowlists can require approval for the others."""
    reference = (SKILL_DIR / "references" / "commands.md").read_text()
    listed = {
        tuple(shlex.split(m.group(1).split(" [", 1)[0])[1:]): m.group(2)
        for m in re.finditer(r"^\| `(gate4 [^`]+)` \| (read|side effect) \|", reference, re.M)
    }
    commands = api_commands()
    assert len(commands) >= 22
    for words, parser in commands.items():
        side_effect = parser.get_default("side_effect")
        methods = {ROUTES[op][0] for op in parser.get_default("operations")}
        reads_only = all(
            ROUTES[op][0] == "GET" or op in SAFE_OPERATIONS
            for op in parser.get_default("operations")
        )
        assert side_effect is not reads_only, (words, methods)
        entry = next((kind for w, kind in listed.items() if w[: len(words)] == words), None)
        assert entry == ("side effect" if side_effect else "read"), words
    # The allowlist example leaves exactly the side-effecting commands to approval prompts.
    patterns = {tuple(p.split()[1:-1]) for p in re.findall(r"`(gate4 [a-z ]+ \*)`", reference)}
    assert patterns == {w for w, p in commands.items() if p.get_default("side_effect")}


def test_the_allowlist_admits_the_skills_reads_as_whole_commands_only() -> None:
    """Every read command the skill shows runs without a prompt; no side effect does, and no
    read with anything appended (an `--api-base` elsewhere above all) does either."""
    reference = (SKILL_DIR / "references" / "commands.md").read_text()
    (block,) = [b for b in re.findall(r"```json\n(.*?)```", reference, re.S) if "allowlist" in b]
    entries = json.loads(block)["agents"]["main"]["allowlist"]
    assert {e["pattern"] for e in entries} == {"gate4"}
    allowed = [re.compile(e["argPattern"]) for e in entries]

    def admitted(command: str) -> bool:
        # OpenClaw matches the parsed arguments after the executable, joined by one space.
        arguments = " ".join(shlex.split(command)[1:])
        return any(p.search(arguments) for p in allowed)

    _, body = frontmatter_and_body(SKILL)
    ids = {"SESSION_ID": "ses_0a1b", "DEPLOYMENT_ID": "dep_0a1b", "ORDER_ID": "ord_0a1b",
           "REQUEST_ID": "req_0a1b2c3d"}  # fmt: skip
    shown = [c for c in code_lines(body) if c.startswith("gate4 ")]
    for template in shown:
        command = re.sub("|".join(ids), lambda m: ids[m.group(0)], template)
        side_effect = parse(command).side_effect
        assert admitted(command) is not side_effect, command
        for extra in (" --api-base http://127.0.0.1:9", " --api-base=http://127.0.0.1:9",
                      " --credentials /tmp/other.env", " --output table", " x"):  # fmt: skip
            assert not admitted(command + extra), command + extra
    for words, parser in api_commands().items():
        if parser.get_default("side_effect"):
            for tail in ("", " dep_0a1b", " tenant --reason r", " --reason r"):
                assert not admitted("gate4 " + " ".join(words) + tail), words


# -- the client against a live gateway -------------------------------------------------------


def test_client_opens_and_reads_an_openclaw_session_sync_and_async(tenant: Tenant) -> None:
    with tenant.client(channel="openclaw") as gate4:
        created = gate4.create_session(
            topic="incident-triage", metadata={"notificationsOptIn": True, "clientLane": "skill"}
        )
        assert gate4.get_session(created["sessionId"])["sessionId"] == created["sessionId"]
    assert created["channel"] == "openclaw"
    assert created["metadata"] == {"notificationsOptIn": True, "clientLane": "skill"}
    assert set(created["contextMemorySnapshot"]) >= {"version", "digest", "content"}

    async def read_async() -> str:
        async with AsyncGate4Client(
            tenant.live.url, credentials=tenant.credentials(), channel="openclaw"
        ) as agate4:
            return (await agate4.get_session(created["sessionId"]))["topic"]

    assert asyncio.run(read_async()) == "incident-triage"


def test_client_raises_canonical_errors_with_request_id_code_and_outcome(
    gate4_stack: LiveStack, tenant: Tenant
) -> None:
    with tenant.client() as gate4:
        with pytest.raises(NotFoundError) as not_found:
            gate4.get_deployment("dep_missing", request_id="req:client-404")
        assert (not_found.value.status, not_found.value.code) == (404, "NOT_FOUND")
        assert not_found.value.request_id == "req:client-404"
        assert not_found.value.trace_id

        with pytest.raises(RiskRejectedError) as rejected:  # no policy yet: fail closed
            gate4.create_deployment(
                strategy_id="mean-reversion-1",
                account_id="acc_demo",
                instruments=["BTC-USD"],
                capital_allocation="1000",
            )
        assert rejected.value.status == 422
        assert (rejected.value.code, rejected.value.outcome) == (
            "RISK_LIMIT_BREACHED",
            "POLICY_INVALID",
        )
        assert rejected.value.request_id.startswith("req_")
        assert rejected.value.idempotency_key

    other = new_tenant(gate4_stack)
    mixed = Credentials(
        token=tenant.token, api_key=other.api_key, tenant_id=tenant.tenant_id, user_id="alice"
    )
    with tenant.client(credentials=mixed) as gate4, pytest.raises(PermissionDeniedError) as err:
        gate4.list_deployments()
    assert err.value.code == "TENANT_MISMATCH"
    bad = Credentials(
        token="not-a-jwt", api_key=tenant.api_key, tenant_id=tenant.tenant_id, user_id="alice"
    )
    with tenant.client(credentials=bad) as gate4, pytest.raises(AuthenticationError) as auth:
        gate4.verify_audit_chain()
    assert auth.value.code == "UNAUTHENTICATED" and auth.value.request_id


# -- the CLI against a live gateway ------------------------------------------------------------


def assert_error(result: CliResult, exit_code: int, status: int, code: str) -> dict[str, Any]:
    """The exit code, the problem document on stdout, and its requestId on stderr."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    problem: dict[str, Any] = result.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert result.stderr.startswith(f"gate4: error: {status} {code}")
    assert f"requestId {problem['requestId']}" in result.stderr
    return problem


def put_demo_policy(tenant: Tenant) -> None:
    with tenant.client() as gate4:
        gate4.put_policy(json.loads(DEMO_POLICY.read_text()), reason="client-lane tests")


def test_cli_exit_codes_follow_the_documented_table(
    gate4_stack: LiveStack, tenant: Tenant, run_cli: RunCli
) -> None:
    env = tenant.env()
    outputs: list[CliResult] = []

    def run(*argv: str, environment: dict[str, str] | None = None) -> CliResult:
        result = run_cli(list(argv), env if environment is None else environment)
        outputs.append(result)
        return result

    ok = run("sessions", "create", "--topic", "exit-codes")
    assert ok.exit_code == EXIT_OK
    session_id = ok.json()["sessionId"]
    assert ok.stderr.startswith("gate4: requestId req_")

    missing = run(
        "deployments", "list", environment={k: v for k, v in env.items() if k != "GATE4_TOKEN"}
    )
    assert missing.exit_code == EXIT_USAGE
    assert "GATE4_TOKEN" in missing.stderr and missing.stdout == ""

    assert_error(
        run("orders", "submit", "--deployment", "dep_1", "--instrument", "btc usd",
            "--side", "buy", "--quantity", "1"),
        EXIT_USAGE, 400, "VALIDATION_FAILED",
    )  # fmt: skip
    assert_error(
        run("audit", "verify", environment={**env, "GATE4_TOKEN": "not-a-jwt"}),
        EXIT_AUTH, 401, "UNAUTHENTICATED",
    )  # fmt: skip
    viewer = new_tenant(gate4_stack, roles=["viewer"])
    assert_error(
        run("sessions", "create", "--topic", "t", environment=viewer.env()),
        EXIT_AUTH, 403, "FORBIDDEN",
    )  # fmt: skip
    assert_error(run("deployments", "get", "dep_missing"), EXIT_NOT_FOUND, 404, "NOT_FOUND")

    first = run("turns", "send", session_id, "--message", "help", "--idempotency-key", "key-exit-5")
    assert first.exit_code == EXIT_OK
    assert "idempotency key key-exit-5" in first.stderr
    assert_error(
        run("turns", "send", session_id, "--message", "status", "--idempotency-key", "key-exit-5"),
        EXIT_CONFLICT, 422, "IDEMPOTENCY_KEY_REUSED",
    )  # fmt: skip

    create = ("deployments", "create", "--strategy", "mean-reversion-1", "--account", "acc_demo",
              "--instrument", "BTC-USD", "--capital", "1000")  # fmt: skip
    rejected = assert_error(run(*create), EXIT_RISK_REJECTED, 422, "RISK_LIMIT_BREACHED")
    assert rejected["outcome"] == "POLICY_INVALID"
    assert "outcome POLICY_INVALID" in outputs[-1].stderr
    assert "idempotency key " in outputs[-1].stderr

    put_demo_policy(tenant)
    engaged = run("killswitch", "engage", "tenant", "--reason", "exit-code test")
    assert engaged.exit_code == EXIT_OK and engaged.json()["engaged"] is True
    blocked = assert_error(run(*create), EXIT_KILL_SWITCH, 423, "KILL_SWITCH_ENGAGED")
    assert blocked["outcome"] == "KILL_SWITCH_ENGAGED"

    down = run("deployments", "list", "--retries", "0",
               environment={**env, "GATE4_API_BASE": "http://127.0.0.1:9"})  # fmt: skip
    assert down.exit_code == EXIT_UNAVAILABLE
    assert down.json()["code"] == "GATEWAY_UNREACHABLE"
    assert f"requestId {down.json()['requestId']}" in down.stderr

    assert {r.exit_code for r in outputs} <= set(EXIT_CODES)
    for result in outputs:
        for secret in tenant.secrets() + viewer.secrets():
            assert secret not in result.stdout and secret not in result.stderr


def test_the_console_script_prints_no_secret_and_keeps_the_codes(tenant: Tenant) -> None:
    env = tenant.env()
    results = [
        run_gate4_process(["killswitch", "status", "tenant", "--output", "table"], env),
        run_gate4_process(["orders", "get", "ord_missing"], env),
        run_gate4_process(["audit", "verify"], {**env, "GATE4_API_KEY": "g4k_nope_nope"}),
        run_gate4_process(["sessions", "create", "--help"], env),
    ]
    assert [r.exit_code for r in results] == [EXIT_OK, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_OK]
    assert "scopeId" in results[0].stdout and tenant.tenant_id in results[0].stdout
    assert results[1].json()["requestId"] in results[1].stderr
    for result in results:
        for secret in tenant.secrets():
            assert secret not in result.stdout + result.stderr


def test_cli_marks_the_openclaw_lane(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    cli_lane = run_cli(["sessions", "create", "--topic", "failover", "--lane", "cli"], env)
    plain = run_cli(["sessions", "create", "--topic", "plain"], env)
    skill = run_cli(
        ["sessions", "create", "--topic", "via-openclaw"], {**env, "OPENCLAW_SHELL": "exec"}
    )
    off = run_cli(
        ["sessions", "create", "--topic", "contained", "--lane", "cli"],
        {**env, "GATE4_NOTIFICATIONS_OPT_IN": "false"},
    )
    for result in (cli_lane, plain, skill, off):
        assert result.exit_code == EXIT_OK, result.stderr
    assert cli_lane.json()["channel"] == "openclaw"
    assert cli_lane.json()["metadata"] == {"notificationsOptIn": True, "clientLane": "cli"}
    assert plain.json()["channel"] == "api"
    assert "clientLane" not in plain.json()["metadata"]
    assert skill.json()["metadata"]["clientLane"] == "skill"
    assert off.json()["metadata"] == {"notificationsOptIn": False, "clientLane": "cli"}

    with tenant.client() as gate4:
        events = gate4.query_audit_events({"type": "conversation.session.created"})["events"]
    channel_by_session = {e["sessionId"]: e.get("channel") for e in events}
    assert channel_by_session[cli_lane.json()["sessionId"]] == "openclaw"  # X-Channel
    assert channel_by_session[skill.json()["sessionId"]] == "openclaw"
    assert channel_by_session[plain.json()["sessionId"]] == "cli"
    # The requestId each command printed is the one the platform recorded.
    request_ids = {e["requestId"] for e in events}
    assert {cli_lane.request_id, plain.request_id, skill.request_id} <= request_ids
