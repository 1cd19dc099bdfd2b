"""Every shell command of the runbook runs, as written, against a live platform.

The runbook's commands are typed at the repository root of a developer running `make run`:
they read `var/dev-credentials.env`, write to `var/incidents/`, read spans from `var/traces/`.
The test gives them exactly that without touching the repository's own `var/`: a workspace
whose `tests`, `docs`, `deploy`, `pyproject.toml` and `.venv` are the repository's (symlinks)
and whose `var` is the live platform's state directory. The commands call `.venv/bin/gate4`
and `.venv/bin/python`, so the shell's PATH has no uv, as on a newcomer's machine. The
incident is the issue's "done when": a drawdown trips the kill switch, an order is refused
with 423, and the on-call engineer has its requestId, the deployment and an
OpenClaw session.

All `sh` blocks run in order in one bash (`set -euo pipefail`), so a failing command fails
the test with the block it sits in. Each contract suite runs once: the capture attaches the
risk run through `--contract-results`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cli.credentials import issue_credentials, write_env_file
from services.runtime.roles import PLATFORM as ROLES
from tests.docs import runbook
from tests.docs.runbook import ROOT
from tests.support.incidents import short, spans_exported, trip_drawdown
from tests.support.live import Tenant
from tests.support.stack import LiveStack

LINKED = ("tests", "docs", "deploy", "pyproject.toml", ".venv")
INCIDENT_ID = "INC-runbook-drill"
#: Variables of the caller's environment that would change what the commands do.
DROPPED_PREFIXES = ("GATE4_", "PYTEST_", "OTEL_")
DROPPED = {"TOKEN", "API_KEY", "TENANT_ID", "USER_ID", "PLATFORM_API_BASE", "VIRTUAL_ENV"}


def path_without_uv(path: str) -> str:
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not Path(d, "uv").exists())


def script() -> str:
    """The runbook's shell blocks as one bash script, each announced on stderr."""
    parts = ["set -euo pipefail"]
    for number, block in enumerate(runbook.shell_blocks(), start=1):
        parts.append(f'echo "### runbook block {number} (line {block.line}, {block.section})" >&2')
        parts.append(block.text)
    return "\n".join(parts) + "\n"


def test_every_runbook_command_succeeds_against_a_live_platform(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    workspace = tmp_path / "repo"
    workspace.mkdir()
    for name in LINKED:
        (workspace / name).symlink_to(ROOT / name)
    (workspace / "var").symlink_to(live_stack.var_dir.resolve())

    # What `make run` leaves behind: the credentials file of a tenant (one of its own here).
    creds = issue_credentials(
        live_stack.settings(),
        api_base=live_stack.url,
        tenant_id=f"runbook-{short()}",
        user_id="oncall",
        roles=ROLES,
        ttl_seconds=3600,
    )
    write_env_file(live_stack.var_dir / "dev-credentials.env", creds)
    tenant = Tenant(live_stack, creds.tenant_id, creds.user_id, creds.token, creds.api_key)

    # The incident: an OpenClaw session, then a drawdown trip and an order refused with 423.
    with tenant.client(channel="openclaw") as gate4:
        session = gate4.create_session(
            topic="incident-triage", metadata={"notificationsOptIn": True, "clientLane": "skill"}
        )["sessionId"]
    trip = trip_drawdown(tenant)
    spans_exported(live_stack, trip.blocked_request_id)

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(DROPPED_PREFIXES) and k not in DROPPED
    }
    env.update(
        PATH=path_without_uv(env.get("PATH", os.defpath)),
        REQUEST_ID=trip.blocked_request_id,
        DEPLOYMENT_ID=trip.deployment_id,
        SESSION_ID=session,
        INCIDENT_ID=INCIDENT_ID,
    )
    proc = subprocess.run(
        ["bash", "-c", script()],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        blocks = [line for line in proc.stderr.splitlines() if line.startswith("### runbook")]
        pytest.fail(
            f"a runbook command failed (exit {proc.returncode}) in {blocks[-1] if blocks else '?'}"
            f"\n--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}"
        )

    # The branch named after the trip, and the bundle the evidence step wrote.
    assert "branch: B=yes > C=yes > D" in proc.stdout
    triage = json.loads((live_stack.var_dir / "incidents" / "triage-risk.json").read_text())
    assert triage["leaf"] == "D"
    folder = live_stack.var_dir / "incidents" / INCIDENT_ID
    handoff = (folder / "handoff.md").read_text()
    assert handoff in proc.stdout  # the runbook's `cat` printed it
    assert f"- Incident ID: {INCIDENT_ID}" in handoff
    assert "attached from var/incidents/contracts-risk.xml" in handoff
    evidence = json.loads((folder / "evidence.json").read_text())
    assert evidence["contractTests"]["source"] == "junit"
    assert evidence["contractTests"]["status"] == "passed"
    for path in folder.iterdir():
        content = path.read_text()
        assert creds.token not in content and creds.api_key not in content
    assert creds.token not in proc.stdout and creds.api_key not in proc.stdout
