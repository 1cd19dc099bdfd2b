"""Runbook A: the OpenClaw flow end to end on a live platform, in both client lanes.

Skill lane: the real OpenClaw (`openclaw agent --local`, one run per user message in one
OpenClaw session, with the scripted model of tests/support/scripted_model.py on loopback)
reads the gate4-platform skill and runs its `gate4` commands with its exec tool: it opens an
`openclaw` session (clientLane=skill), sends turns, reads the deployment's status, has the
platform's assistant propose the stop, confirms it with "yes" on the user's next message,
and, after a risk-officer engages the tenant's kill switch (twice; the second engage is no
transition), sees the kill-switch notification exactly once.

CLI lane (Runbook A's failover): the same skill commands with `--lane cli`, run by the test
as `gate4` processes the way an operator runs them from a terminal, with no OpenClaw.

Each lane works in a tenant of its own. The platform effects must be the same: the
deployment stopped under the confirming turn's requestId, the same audit event types and
outcomes on channel `openclaw`, the same replies and memory, the same notifications; the
sessions differ only in `clientLane` (skill vs cli).

OpenClaw runs once per test session (a module fixture): three agent runs, about 50 s on a
two-core machine (each run starts OpenClaw's embedded runtime, ~12 s). Without the npm
registry the skill lane skips locally and fails under CI=true; the CLI lane always runs.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import GATE4_BIN, Tenant, deploy, gate4_stack, new_tenant
from tests.support.live import run_gate4_process as run_gate4
from tests.support.openclaw import (
    SKILL_DIR,
    SYSTEM_PATH,
    WORKSPACE,
    agent_turn,
    ensure_openclaw,
    openclaw_env,
    scratch_workspace,
)
from tests.support.scripted_model import (
    Scenario,
    Step,
    command_for,
    exec_transcript,
    first_document,
    openclaw_config,
    serve,
    skill_commands,
    values_from,
)
from tests.support.stack import LiveStack, wait_for

__all__ = ["gate4_stack"]

OFFICER_ROLES = ["risk-officer", "sre"]


@dataclass(frozen=True)
class UserTurn:
    """What the user tells OpenClaw, and the skill commands that answer it."""

    message: str
    steps: tuple[Step, ...]


OPEN = UserTurn(
    "Open a Gate4 session, show me how my deployment is doing and propose to stop it",
    (
        Step("gate4 sessions create"),
        Step("gate4 turns send", '"status of all deployments"'),
        Step("gate4 deployments get"),
        Step("gate4 turns send", '"stop DEPLOYMENT_ID"'),
    ),
)
CONFIRM = UserTurn(
    "Yes, I confirm: stop it now",
    (Step("gate4 turns send", '"yes"'), Step("gate4 deployments get")),
)
CHECK = UserTurn(
    "Anything new? Check my notifications and the kill switches",
    (
        Step("gate4 sessions notifications"),
        Step("gate4 turns send", '"status of all deployments"'),
        Step("gate4 killswitch list"),
    ),
)
FLOW = (OPEN, CONFIRM, CHECK)
VERBS = [" ".join(step.prefix.split()[1:]) for turn in FLOW for step in turn.steps]
#: What the flow leaves in the audit trail on channel openclaw, in either lane.
LANE_EVENTS = sorted(
    [
        ("conversation.session.created", "CREATED"),
        ("conversation.turn", "STATUS"),
        ("conversation.turn", "STOP"),
        ("conversation.turn", "CONFIRM"),
        ("conversation.turn", "STATUS"),
        ("risk.decision", "APPROVED"),
        ("deployment.stopping", "APPROVED"),
        ("deployment.stopped", "STOPPED"),
    ]
)


@dataclass
class LaneRun:
    lane: str
    tenant: Tenant
    officer: Tenant
    deployment_id: str
    #: (command, what it printed) of every gate4 command, in order.
    transcript: list[tuple[str, str]] = field(default_factory=list)
    #: requestIds of the two engage calls (the second found the switch engaged).
    engage_request_ids: list[str] = field(default_factory=list)
    #: The agent's answer to each user message (skill lane only).
    answers: list[str] = field(default_factory=list)

    def document(self, index: int) -> dict[str, Any]:
        return first_document(self.transcript[index][1])

    @property
    def session_id(self) -> str:
        return str(self.document(0)["sessionId"])

    def turns(self) -> list[dict[str, Any]]:
        return [first_document(out) for cmd, out in self.transcript if " turns send " in cmd]


# -- the flow, shared by both lanes ------------------------------------------------------------


def prepare(live: LiveStack, lane: str) -> LaneRun:
    """A fresh tenant with a running deployment, and a risk-officer of that tenant."""
    tenant = new_tenant(live, user="alice")
    officer = dataclasses.replace(
        tenant, user_id="olga", token=live.token(tenant.tenant_id, "olga", OFFICER_ROLES)
    )
    return LaneRun(lane, tenant, officer, deploy(tenant))


def engage_before_the_last_turn(live: LiveStack, run: LaneRun) -> None:
    """A risk-officer engages the tenant's switch, then engages it again (ALREADY_ENGAGED);
    returns once the notification feed has passed both."""
    tenant_id = run.tenant.tenant_id
    with run.officer.client() as officer:
        for reason in ("incident drill", "incident drill, again"):
            request_id = f"req_{uuid.uuid4().hex}"
            officer.engage_kill_switch("tenant", tenant_id, reason=reason, request_id=request_id)
            run.engage_request_ids.append(request_id)

        def recorded() -> list[Any] | None:
            events = officer.query_audit_events({"requestId": run.engage_request_ids[1]})
            found = [e for e in events["events"] if e["type"] == "killswitch.engaged"]
            return found or None

        assert wait_for(recorded)[0]["outcome"] == "ALREADY_ENGAGED"
    wait_for_feed(live)

    def both() -> bool:
        with run.tenant.client() as gate4:
            listing = gate4.list_notifications(run.session_id, include_delivered=True)
        kinds = {n["kind"] for n in listing["notifications"]}
        return {"deployment.stopped", "killswitch.engaged"} <= kinds

    wait_for(both)


def wait_for_feed(live: LiveStack) -> None:
    """Returns once the notification feed has handled everything audited so far: it follows
    one audit stream in order, so a kill-switch engage in a tenant of its own, once notified,
    comes after every earlier event."""
    probe = new_tenant(live)
    with probe.client() as gate4:
        session = gate4.create_session(topic="feed-probe", metadata={"notificationsOptIn": True})
        gate4.engage_kill_switch("tenant", probe.tenant_id, reason="feed probe")
        wait_for(lambda: gate4.list_notifications(session["sessionId"])["notifications"])


def cli_argv(command: str) -> list[str]:
    """The skill's command as the operator runs it in the CLI lane (`--lane cli`)."""
    argv = shlex.split(command)[1:]
    if "--lane" in argv:
        argv[argv.index("--lane") + 1] = "cli"
    else:
        argv += ["--lane", "cli"]
    return argv


def run_cli_lane(live: LiveStack) -> LaneRun:
    run = prepare(live, "cli")
    commands = skill_commands((SKILL_DIR / "SKILL.md").read_text(encoding="utf-8"))
    for turn in FLOW:
        if turn is CHECK:
            engage_before_the_last_turn(live, run)
        for step in turn.steps:
            values = values_from(
                [out for _, out in run.transcript], {"DEPLOYMENT_ID": run.deployment_id}
            )
            argv = cli_argv(command_for(step, commands, values))
            result = run_gate4(argv, run.tenant.env())
            assert result.exit_code == 0, (argv, result.stdout, result.stderr)
            assert result.request_id.startswith("req_")
            run.transcript.append((shlex.join(["gate4", *argv]), result.stdout + result.stderr))
    return run


def run_skill_lane(live: LiveStack, home: Path) -> tuple[LaneRun, list[dict[str, Any]]]:
    ensure_openclaw()
    run = prepare(live, "skill")
    scenario = Scenario(
        plans={turn.message: list(turn.steps) for turn in FLOW},
        values={"DEPLOYMENT_ID": run.deployment_id},
    )
    before = sorted(WORKSPACE.rglob("*"))
    with serve(scenario) as (model, base_url):
        config = home / "openclaw.json"
        config.write_text(json.dumps(openclaw_config(base_url)))
        env = openclaw_env(
            home,
            [GATE4_BIN.parent, SYSTEM_PATH],
            {**run.tenant.env(), "OPENCLAW_CONFIG_PATH": str(config)},
            workspace=scratch_workspace(home),
        )
        conversation = f"gate4-e2e-{uuid.uuid4().hex[:8]}"
        for turn in FLOW:
            if turn is CHECK:
                run.transcript = exec_transcript(model.requests)
                engage_before_the_last_turn(live, run)
            result = agent_turn(env, turn.message, conversation)
            assert result.exit_code == 0, result.stderr[-3000:]
            run.answers.append(result.json()["payloads"][-1]["text"])
        run.transcript = exec_transcript(model.requests)
    assert sorted(WORKSPACE.rglob("*")) == before  # the repository is left as it was
    return run, model.requests


@pytest.fixture(scope="module")
def skill_lane(
    gate4_stack: LiveStack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LaneRun, list[dict[str, Any]]]:
    return run_skill_lane(gate4_stack, tmp_path_factory.mktemp("openclaw-home"))


@pytest.fixture(scope="module")
def cli_lane(gate4_stack: LiveStack) -> LaneRun:
    return run_cli_lane(gate4_stack)


# -- what either lane must show ----------------------------------------------------------------


def lane_events(run: LaneRun) -> list[Any]:
    """The tenant's audit trail once the flow's events are all in (they ship asynchronously)."""

    def probe() -> list[Any] | None:
        with run.officer.client() as officer:
            events: list[Any] = officer.query_audit_events(limit=500)["events"]
        return events if Counter(on_channel(events)) >= Counter(LANE_EVENTS) else None

    return wait_for(probe)


def on_channel(events: list[Any]) -> list[tuple[str, str]]:
    return sorted((e["type"], e["outcome"]) for e in events if e.get("channel") == "openclaw")


def assert_the_flow(run: LaneRun) -> None:
    assert [cmd.split()[1:3] for cmd, _ in run.transcript] == [v.split() for v in VERBS]
    session = run.document(0)
    assert session["channel"] == "openclaw"
    assert session["metadata"] == {"clientLane": run.lane, "notificationsOptIn": True}

    status, proposal, confirmation, last = run.turns()
    assert (
        f"{run.deployment_id} (mean-reversion-1 on acc_demo): running;" in status["reply"]["text"]
    )
    assert run.document(2)["state"] == "running"
    (proposed,) = proposal["reply"]["actions"]
    assert (proposed["kind"], proposed["status"]) == ("stop_deployment", "proposed")
    (executed,) = confirmation["reply"]["actions"]
    assert (executed["status"], executed["outcome"]) == ("executed", "STOPPED")
    assert executed["requestId"] == confirmation["requestId"]
    assert run.document(5)["state"] == "stopped"

    # Every notification reaches the session once; the kill switch's is the first engage's
    # (the second found the switch engaged: no transition, no notification).
    delivered = [n for turn in run.turns() for n in turn["notifications"]]
    assert Counter(n["kind"] for n in delivered) == Counter(
        {"deployment.stopped": 1, "killswitch.engaged": 1}
    )
    (switch_note,) = [n for n in last["notifications"] if n["kind"] == "killswitch.engaged"]
    assert switch_note["severity"] == "critical"
    assert switch_note["requestId"] == run.engage_request_ids[0]
    assert switch_note["message"] == (
        f"Kill switch engaged for tenant {run.tenant.tenant_id}: incident drill"
    )
    pending = run.document(6)["notifications"]
    assert switch_note in pending  # read without a turn first, then delivered by the turn
    (switch,) = run.document(8)["killSwitches"]
    assert (switch["scope"], switch["engaged"], switch["trigger"]) == ("tenant", True, "manual")

    # The stop is audited under the confirming turn's requestId, on the OpenClaw channel.
    with run.officer.client() as officer:
        by_request = officer.query_audit_events({"requestId": confirmation["requestId"]})
        listing = officer.list_notifications(run.session_id, include_delivered=True)
        session_now = officer.get_session(run.session_id)
    stopped = [e for e in by_request["events"] if e["type"] == "deployment.stopped"]
    assert [(e["deploymentId"], e["channel"]) for e in stopped] == [(run.deployment_id, "openclaw")]
    assert sorted(n["notificationId"] for n in listing["notifications"]) == sorted(
        n["notificationId"] for n in delivered
    )
    assert session_now["pendingNotificationCount"] == 0
    assert session_now["turnCount"] == 4

    events = lane_events(run)
    assert on_channel(events) == LANE_EVENTS
    assert {e.get("channel") for e in events if e.get("sessionId") == run.session_id} == {
        "openclaw"
    }
    assert not any(secret in out for secret in run.tenant.secrets() for _, out in run.transcript)


def without_ids(run: LaneRun, text: str) -> str:
    for value, placeholder in (
        (run.deployment_id, "DEPLOYMENT_ID"),
        (run.session_id, "SESSION_ID"),
        (run.tenant.tenant_id, "TENANT_ID"),
    ):
        text = text.replace(value, placeholder)
    return text


def commands(run: LaneRun) -> list[list[str]]:
    """The gate4 commands the lane ran, without its ids and its --lane."""
    out = []
    for command, _ in run.transcript:
        argv = shlex.split(without_ids(run, command))
        lane = argv.index("--lane") if "--lane" in argv else len(argv)
        out.append(argv[:lane] + argv[lane + 2 :])
    return out


def normalised(run: LaneRun) -> list[Any]:
    """The turns' messages, replies and memory with the lane's own ids taken out."""
    text = json.dumps(
        [
            {
                "message": turn["message"],
                "reply": turn["reply"]["text"],
                "actions": [
                    (a["kind"], a["status"], a["outcome"]) for a in turn["reply"]["actions"]
                ],
                "memory": turn["contextMemory"],
                "version": turn["contextMemorySnapshot"]["version"],
            }
            for turn in run.turns()
        ]
    )
    result: list[Any] = json.loads(without_ids(run, text))
    return result


# -- the tests ---------------------------------------------------------------------------------


def test_the_cli_lane_runs_the_whole_flow(cli_lane: LaneRun) -> None:
    assert_the_flow(cli_lane)
    assert all(" --lane cli" in cmd for cmd, _ in cli_lane.transcript)


def test_a_real_openclaw_agent_runs_the_whole_flow_through_the_skill(
    skill_lane: tuple[LaneRun, list[dict[str, Any]]],
) -> None:
    run, requests = skill_lane
    assert_the_flow(run)
    assert shlex.split(run.transcript[0][0]) == [
        *("gate4", "sessions", "create", "--topic", "incident-triage"),
        *("--lane", "skill", "--notifications"),
    ]
    # OpenClaw read the skill, then ran only what the skill shows, one user message at a time:
    # the stop was proposed in one message and confirmed only on the next.
    opened, confirmed, checked = run.answers
    assert opened.startswith("Done.") and "actions stop_deployment proposed" in opened
    assert "actions stop_deployment executed" in confirmed
    assert "killswitch.engaged (critical)" in checked  # OpenClaw relays the notification
    assert all(cmd.startswith("gate4 ") for cmd, _ in run.transcript)
    seen = json.dumps(requests)
    assert run.tenant.token not in seen and run.tenant.api_key not in seen


def test_both_lanes_have_the_same_platform_effects(
    skill_lane: tuple[LaneRun, list[dict[str, Any]]], cli_lane: LaneRun
) -> None:
    skill, _ = skill_lane
    runs = (skill, cli_lane)
    states = []
    sessions = []
    for run in runs:
        with run.tenant.client() as gate4:
            states.append(gate4.get_deployment(run.deployment_id)["state"])
            sessions.append(gate4.get_session(run.session_id))
    assert states == ["stopped", "stopped"]
    assert [s["channel"] for s in sessions] == ["openclaw", "openclaw"]
    assert [s["metadata"]["clientLane"] for s in sessions] == ["skill", "cli"]
    assert [s["metadata"]["notificationsOptIn"] for s in sessions] == [True, True]

    trails = [on_channel(lane_events(run)) for run in runs]
    assert trails[0] == trails[1] == LANE_EVENTS
    assert commands(skill) == commands(cli_lane)
    assert normalised(skill) == normalised(cli_lane)
    kinds = [
        sorted((n["kind"], n["severity"]) for turn in run.turns() for n in turn["notifications"])
        for run in runs
    ]
    assert (
        kinds[0] == kinds[1] == [("deployment.stopped", "info"), ("killswitch.engaged", "critical")]
    )
