"""`gate4 incident capture` on a live platform: the bundle after a kill-switch trip (the
issue's "done when"), its redaction, the conversation lane, and a broken audit chain."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from cli.incident.handoff import TEMPLATE_FIELDS
from cli.incident.lanes import RISK_CONTRACTS
from tests.support.audit import triggers_dropped
from tests.support.incidents import engage_without_breach, spans_exported, trip_drawdown
from tests.support.live import CliResult, RunCli, Tenant, new_tenant, run_cli
from tests.support.stack import LiveStack

__all__ = ["run_cli"]

SECRET_SHAPES = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ|g4k_[A-Za-z0-9]")


def capture(
    run: RunCli, tenant: Tenant, out: Path, *argv: str, env: dict[str, str] | None = None
) -> CliResult:
    return run(
        [
            "incident",
            "capture",
            *argv,
            "--output-dir",
            str(out),
            "--var-dir",
            str(tenant.live.var_dir),
            "--output",
            "json",
        ],
        env or tenant.env(),
    )


def bundle(out: Path) -> tuple[str, dict[str, Any], str]:
    return (
        (out / "handoff.md").read_text(),
        json.loads((out / "evidence.json").read_text()),
        (out / "repro.sh").read_text(),
    )


def lane_results(path: Path) -> Path:
    """What `pytest <the risk lane's files> --junitxml FILE` writes when each file passes."""
    cases = "".join(
        f'<testcase classname="tests.contracts.{Path(f).stem}" name="test_holds" time="1.0"/>'
        for f in RISK_CONTRACTS
    )
    path.write_text(
        '<testsuites><testsuite name="pytest" timestamp="2026-11-30T10:00:00" time="41.5">'
        f"{cases}</testsuite></testsuites>"
    )
    return path


def field_value(handoff: str, name: str) -> str:
    match = re.search(rf"^- {re.escape(name)}:(.*)$", handoff, re.M)
    assert match, f"handoff lacks {name}"
    return match.group(1).strip()


def assert_no_secrets(out: Path, *secrets: str) -> None:
    for path in out.iterdir():
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"{path.name} holds a secret"
        assert not SECRET_SHAPES.search(text), f"{path.name} holds a JWT or API key"


def test_capture_after_a_kill_switch_trip_is_a_complete_redacted_handoff(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    """Done when: after a trip, `capture --request-id <id> --lane risk` writes a bundle whose
    handoff can be sent as is. The lane's contract results are attached as the runbook's
    command writes them (`--junitxml`); running them is tests/cli/test_incident_rules.py's,
    on a lane of its own, and the runbook test's, on the real lane."""
    tenant = new_tenant(live_stack)
    trip = trip_drawdown(tenant)
    spans_exported(live_stack, trip.blocked_request_id)
    out = tmp_path / "bundle"
    results = lane_results(tmp_path / "contracts-risk.xml")
    result = capture(
        run_cli,
        tenant,
        out,
        "--request-id",
        trip.blocked_request_id,
        "--lane",
        "risk",
        "--contract-results",
        str(results),
    )
    assert result.exit_code == EXIT_OK, result.stderr
    manifest = result.json()
    assert sorted(p.name for p in out.iterdir()) == ["evidence.json", "handoff.md", "repro.sh"]
    assert manifest["leaf"] == "D" and manifest["severity"] == "SEV-2"
    assert manifest["contractTests"] == "passed"

    handoff, evidence, repro = bundle(out)
    # Every field of the runbook's template, in its order.
    positions = [handoff.index(f"- {name}:") for name in TEMPLATE_FIELDS]
    assert positions == sorted(positions)
    assert field_value(handoff, "Affected lane") == "risk"
    assert field_value(handoff, "Current status") == "triage"
    assert field_value(handoff, "Severity").startswith("SEV-2 (")
    assert "the tenant kill switch holds tenant" in field_value(handoff, "Severity")
    assert field_value(handoff, "Owner team").startswith("Team B (secondary: Team F")
    assert field_value(handoff, "Review handoff target issue(s)") == "Parent #77, reliability #81"
    assert re.match(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z \(SEV-2 target",
        field_value(handoff, "Next decision checkpoint time (UTC)"),
    )
    for guardrail in (
        "Platform API only",
        "No provider-direct client calls",
        "Risk fail-closed preserved",
    ):
        assert f"  - {guardrail}: yes (" in handoff
    assert trip.blocked_request_id in handoff and trip.trip_request_id in handoff
    assert trip.deployment_id in handoff and f"tenant_id: {tenant.tenant_id}" in handoff
    assert f"{trip.blocked_request_id}: POST /v1/orders answered 423 KILL_SWITCH_ENGAGED" in handoff
    assert "`.venv/bin/python -m pytest tests/contracts/test_risk_policy_schema.py" in handoff
    assert f"6 passed in 41.50s (exit 0); attached from {results}" in handoff
    assert "`gate4 audit verify`: valid:" in handoff
    assert "Branch: B=yes > C=yes > D" in handoff

    # evidence.json: audit events, spans, policy snapshot + validation, switches, contracts.
    assert evidence["schema"] == "gate4-incident-evidence.v1"
    types = {e["type"] for e in evidence["auditEvents"]}
    assert {"killswitch.tripped", "risk.drawdown", "risk.decision", "order.accepted"} <= types
    (blocked,) = [t for t in evidence["traces"] if t["requestId"] == trip.blocked_request_id]
    assert {"gateway", "execution", "risk"} <= set(blocked["services"])
    tenant_policy = evidence["policy"]["tenant"]
    assert tenant_policy["snapshot"]["data"]["policy"]["schema"] == "risk-policy.v1"
    assert tenant_policy["validation"]["data"]["valid"] is True
    engaged = [s for s in evidence["killSwitches"]["data"]["killSwitches"] if s["engaged"]]
    assert {s["scope"] for s in engaged} == {"tenant", "account", "deployment"}
    assert all(check["valid"] for check in evidence["breachEvidence"])
    contracts = evidence["contractTests"]
    assert (contracts["status"], contracts["source"], contracts["exitCode"]) == (
        "passed",
        "junit",
        0,
    )
    assert contracts["missingFiles"] == [] and len(contracts["perFile"]) == len(RISK_CONTRACTS)
    assert evidence["guardrails"][2]["value"] == "yes"
    assert evidence["triage"]["leaf"] == "D"

    # repro.sh: valid bash, credentials by name only, replays behind the switch.
    assert subprocess.run(["bash", "-n", str(out / "repro.sh")], check=False).returncode == 0
    assert '-H "Authorization: Bearer $TOKEN"' in repro
    assert f"requestId={trip.blocked_request_id}" in repro
    assert 'if [[ "${REPLAY_SIDE_EFFECTS:-no}" == yes ]]; then' in repro
    assert '"quantity": "1"' in repro.split("REPLAY_SIDE_EFFECTS", 1)[1]
    assert_no_secrets(out, tenant.token, tenant.api_key)


def test_no_token_api_key_or_password_reaches_the_bundle(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    tenant = new_tenant(live_stack)
    fake_jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"
    engage_without_breach(
        tenant,
        reason=f"pasted by mistake: {tenant.api_key} postgresql://ops:hunter2secret@db/x "
        f"Bearer {fake_jwt}",
    )
    request_id = next(e["requestId"] for e in events(tenant) if e["type"] == "killswitch.engaged")
    out = tmp_path / "bundle"
    env = tenant.env(GATE4_DATABASE_URL="postgresql://gate4:dbpassw0rd@db:5432/gate4")
    result = capture(
        run_cli,
        tenant,
        out,
        "--request-id",
        request_id,
        "--lane",
        "risk",
        "--skip-contract-tests",
        "redaction test",
        "--impact",
        f"operator pasted their token {tenant.token} into the ticket",
        env=env,
    )
    assert result.exit_code == EXIT_OK, result.stderr
    assert_no_secrets(out, tenant.token, tenant.api_key, "hunter2secret", "dbpassw0rd", fake_jwt)
    handoff, evidence, _ = bundle(out)
    assert "operator pasted their token $GATE4_TOKEN into the ticket" in handoff
    assert "$GATE4_API_KEY postgresql://ops:***@db/x Bearer [redacted" in json.dumps(evidence)
    assert evidence["contractTests"]["source"] == "skipped"
    assert evidence["contractTests"]["reason"] == "redaction test"
    assert "Contract tests not executed: redaction test." in handoff
    # A manual engagement without breach evidence: a false positive, SEV-2, leaf E.
    assert (evidence["triage"]["leaf"], evidence["severity"]["severity"]) == ("E", "SEV-2")
    assert evidence["severity"]["rule"] == "repeated_kill_switch_false_positives"


def test_conversation_lane_capture_with_a_severity_override(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    tenant = new_tenant(live_stack)
    with tenant.client(channel="openclaw") as gate4:
        session = gate4.create_session(topic="drill", metadata={"notificationsOptIn": True})
    request_id = "req-capture-conversation-01"
    with tenant.client() as gate4:
        gate4.get_session(session["sessionId"], request_id=request_id)
    spans_exported(live_stack, request_id)
    out = tmp_path / "bundle"
    result = capture(
        run_cli,
        tenant,
        out,
        "--request-id",
        request_id,
        "--session",
        session["sessionId"],
        "--lane",
        "openclaw",
        "--severity",
        "SEV-1",
        "--status",
        "contained",
        "--skip-contract-tests",
        "--incident-id",
        "INC-42",
    )
    assert result.exit_code == EXIT_OK, result.stderr
    handoff, evidence, repro = bundle(out)
    assert field_value(handoff, "Incident ID") == "INC-42"
    assert field_value(handoff, "Current status") == "contained"
    assert "SEV-1" in field_value(handoff, "Severity")
    assert "set by on-call, suggested SEV-3" in field_value(handoff, "Severity")
    assert field_value(handoff, "Owner team").startswith("Team E (secondary: Team G")
    assert field_value(handoff, "Review handoff target issue(s)") == "Parent #80, docs parent #106"
    assert evidence["triage"]["tree"] == "conversation"
    assert evidence["triage"]["leaf"] == "H"
    assert evidence["contractTests"]["reason"] == "skipped with --skip-contract-tests"
    assert f".venv/bin/gate4 triage conversation --request-id {request_id}" in repro


def test_a_resolved_handoff_names_the_root_cause_and_the_prevention_action(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    tenant = new_tenant(live_stack)
    request_id = "req-capture-resolved-01"
    with tenant.client() as gate4:
        gate4.list_kill_switches(request_id=request_id)
    spans_exported(live_stack, request_id)
    common = (
        *("--request-id", request_id, "--lane", "risk", "--status", "resolved"),
        *("--skip-contract-tests", "resolution drill"),
    )

    refused = capture(run_cli, tenant, tmp_path / "refused", *common, "--root-cause", "x")
    assert refused.exit_code == EXIT_USAGE
    assert refused.stderr.startswith("gate4: error: USAGE: --status resolved needs --root-cause")
    assert not (tmp_path / "refused").exists()

    prevention = tmp_path / "prevention.txt"
    prevention.write_text("alert on 503 RISK_UNAVAILABLE\nrunbook step for a hung risk\n")
    out = tmp_path / "bundle"
    root_cause = "risk paused by a stuck disk; execution waited out its deadline"
    result = capture(
        run_cli,
        tenant,
        out,
        *common,
        "--root-cause",
        root_cause,
        "--prevention-file",
        str(prevention),
    )
    assert result.exit_code == EXIT_OK, result.stderr
    handoff, evidence, _ = bundle(out)
    assert field_value(handoff, "Current status") == "resolved"
    assert field_value(handoff, "Root cause") == root_cause
    assert field_value(handoff, "Prevention action") == "alert on 503 RISK_UNAVAILABLE"
    assert "  runbook step for a hung risk" in handoff
    # After the template's fields, which keep their order.
    assert handoff.index("- Root cause:") > handoff.index("- Next decision checkpoint time")
    assert evidence["rootCause"] == root_cause
    assert evidence["preventionAction"].startswith("alert on 503 RISK_UNAVAILABLE\n")


def test_a_broken_chain_is_named_by_verify_and_escalated_as_an_evidence_gap(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    tenant = new_tenant(live_stack)
    engage_without_breach(tenant)
    url = live_stack.settings().database_url_for("audit")
    with triggers_dropped(url) as conn:
        changed = conn.execute(
            sa.text(
                "UPDATE audit_events SET outcome = 'TAMPERED' WHERE tenant_id = :t AND sequence = 2"
            ),
            {"t": tenant.tenant_id},
        ).rowcount
    assert changed == 1
    verify = run_cli(["audit", "verify"], tenant.env())
    assert verify.exit_code == EXIT_FAILURE
    assert verify.json()["valid"] is False
    assert "first bad link at sequence 2: sequence 2: stored hash does not match" in verify.stderr

    out = tmp_path / "bundle"
    request_id = events(tenant)[0]["requestId"]
    result = capture(
        run_cli,
        tenant,
        out,
        "--request-id",
        request_id,
        "--lane",
        "risk",
        "--skip-contract-tests",
        "chain test",
    )
    assert result.exit_code == EXIT_OK, result.stderr
    handoff, evidence, _ = bundle(out)
    assert "BROKEN: first bad link at sequence 2" in handoff
    assert "audit-evidence-gap" in evidence["signals"]
    assert "Also escalated" in handoff and "Audit evidence gap: Team F" in handoff
    assert field_value(handoff, "Review handoff target issue(s)") == (
        "Parent #77, reliability #81, Docs parent #106"
    )


def test_capture_needs_a_correlation_id(live_stack: LiveStack, run_cli: RunCli) -> None:
    tenant = new_tenant(live_stack)
    result = run_cli(["incident", "capture", "--lane", "risk"], tenant.env())
    assert result.exit_code == EXIT_USAGE
    assert "at least one of --request-id" in result.stderr


def events(tenant: Tenant) -> list[dict[str, Any]]:
    with tenant.client() as gate4:
        return [dict(e) for e in gate4.query_audit_events()["events"]]
