"""The incident tooling's rules without a platform: redaction and the final scan, severity,
the escalation matrix as editable data, guardrails from spans and audit events, contract
results from a JUnit file."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.errors import UsageError
from cli.incident import contracts, guardrails, severity
from cli.incident.capture import SecretInBundle, write_bundle
from cli.incident.escalation import DEFAULT_MATRIX, load_matrix, select
from cli.incident.lanes import LANES, RISK_CONTRACTS, Lane
from cli.incident.platform import RequestTrace, platform_operation
from cli.incident.redact import Redactor
from cli.trace import Span

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
KEY = "g4k_0123456789abcdef_secretsecretsecret"

# -- redaction ---------------------------------------------------------------------------------


def test_known_secrets_become_their_variable_names_and_shapes_are_masked() -> None:
    redactor = Redactor(
        {
            "GATE4_TOKEN": "tok-abcdefghijkl",
            "API_KEY": "key-abcdefghijkl",
            "GATE4_DATABASE_URL": "postgresql://gate4:pa55word@db:5432/gate4",
            "HOME": "/root",
        }
    )
    text = (
        "Authorization: Bearer tok-abcdefghijkl; X-API-Key: key-abcdefghijkl; "
        f"other token {JWT}; key {KEY}; dsn postgresql://u:hunter22@db/x; "
        "Bearer abcdefghijklmnopqrstuvwx; home /root"
    )
    out = redactor.text(text)
    assert "Bearer $GATE4_TOKEN" in out and "X-API-Key: $API_KEY" in out
    for secret in ("tok-abcdefghijkl", "key-abcdefghijkl", JWT, KEY, "hunter22", "pa55word"):
        assert secret not in out
    assert "postgresql://u:***@db/x" in out
    assert "[redacted-jwt]" in out and "[redacted-api-key]" in out
    assert "home /root" in out  # not a secret variable: left alone
    assert redactor.scan("x", out) == []
    # Nested JSON values and keys too.
    assert redactor.value({"k": [JWT, {"tok-abcdefghijkl": 1}]}) == {
        "k": ["[redacted-jwt]", {"$GATE4_TOKEN": 1}]
    }


def test_the_final_scan_names_what_is_left_and_the_bundle_is_not_written(tmp_path: Path) -> None:
    redactor = Redactor({"TOKEN": "tok-abcdefghijkl"})
    findings = redactor.scan("evidence.json", f"ok\nBearer tok-abcdefghijkl\n{KEY}\n{JWT}")
    kinds = {(f.line, f.kind) for f in findings}
    assert (2, "a secret value from the environment") in kinds
    assert (3, "a g4k_ API key") in kinds and (4, "a JWT") in kinds
    out = tmp_path / "bundle"
    with pytest.raises(SecretInBundle) as refused:
        write_bundle(out, {"handoff.md": "fine", "evidence.json": f"leak {JWT}"}, redactor)
    assert "evidence.json line 1: a JWT" in refused.value.message
    assert JWT not in refused.value.message
    assert not out.exists()

    write_bundle(out, {"handoff.md": "# ok\n", "repro.sh": "echo $TOKEN\n"}, redactor)
    assert (out / "handoff.md").read_text() == "# ok\n"
    assert oct((out / "handoff.md").stat().st_mode & 0o777) == "0o600"
    assert oct((out / "repro.sh").stat().st_mode & 0o777) == "0o700"


# -- severity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "level", "rule"),
    [
        (severity.Facts(gateway_reachable=False), "SEV-1", "side_effects_blocked_across_tenants"),
        (severity.Facts(not_serving=["risk"]), "SEV-1", "side_effects_blocked_across_tenants"),
        (
            severity.Facts(enforcement_failed=["tenant t: venue down"]),
            "SEV-1",
            "wrong_side_execution_risk",
        ),
        (
            severity.Facts(invalid_switches=["tenant t: no breach"]),
            "SEV-2",
            "repeated_kill_switch_false_positives",
        ),
        (severity.Facts(contract_failed=True), "SEV-2", "single_tenant_contract_failures"),
        (
            severity.Facts(engaged=[{"scope": "tenant", "scopeId": "t", "trigger": "drawdown"}]),
            "SEV-2",
            "single_tenant_side_effects_blocked",
        ),
        (severity.Facts(rising_rejections=True), "SEV-2", "single_tenant_side_effects_blocked"),
        (severity.Facts(conversation_leaf="G"), "SEV-2", "degraded_suggestions"),
        (
            severity.Facts(responses={"req-1": (400, "VALIDATION_FAILED")}),
            "SEV-3",
            "isolated_payload_client_defect",
        ),
        (severity.Facts(not_serving=["audit"]), "SEV-3", "no_trigger_matched"),
    ],
)
def test_severity_follows_the_runbook_table(facts: severity.Facts, level: str, rule: str) -> None:
    suggested = severity.suggest(facts)
    assert (suggested.suggested, suggested.rule, suggested.chosen) == (level, rule, level)
    assert suggested.level.trigger == severity.LEVELS[level].trigger


def test_an_override_is_kept_next_to_the_suggestion_and_sets_the_checkpoint() -> None:
    chosen = severity.suggest(severity.Facts(not_serving=["execution"]), override="SEV-2")
    assert (chosen.suggested, chosen.chosen, chosen.overridden) == ("SEV-1", "SEV-2", True)
    assert "set by on-call, suggested SEV-1" in chosen.line()
    start = datetime(2026, 1, 1, 10, 0, 10, tzinfo=UTC)
    at, why = severity.next_checkpoint(chosen, start, start + timedelta(minutes=5))
    assert at == datetime(2026, 1, 1, 12, 1, tzinfo=UTC) and "2-hour mitigation" in why
    late, why = severity.next_checkpoint(chosen, start, start + timedelta(hours=3))
    assert late == datetime(2026, 1, 1, 13, 31, tzinfo=UTC) and "passed" in why


# -- escalation matrix -----------------------------------------------------------------------------


def test_the_matrix_file_gives_owner_and_targets_per_lane_and_signal() -> None:
    rows = load_matrix()
    risk = select(rows, "risk", [], str(DEFAULT_MATRIX))
    assert (risk.owner.primary_team, risk.owner.secondary_team) == ("Team B", "Team F")
    assert risk.targets == ["Parent #77", "reliability #81"]
    conversation = select(rows, "openclaw", ["audit-evidence-gap"], "m")
    assert conversation.owner.condition == "Conversation/OpenClaw contract drift"
    assert [r.condition for r in conversation.also] == ["Audit evidence gap"]
    assert conversation.targets == [
        "Parent #80",
        "docs parent #106",
        "Docs parent #106",
        "reliability #81",
    ]
    assert select(rows, "runtime", [], "m").owner.condition == "Runtime state/retry anomalies"


def test_editing_the_yaml_changes_the_owner_without_code(tmp_path: Path) -> None:
    document = yaml.safe_load(DEFAULT_MATRIX.read_text())
    document["rows"][2]["primaryTeam"] = "Team Z"
    document["rows"][2]["escalateTo"] = ["Parent #999"]
    edited = tmp_path / "matrix.yaml"
    edited.write_text(yaml.safe_dump(document))
    chosen = select(load_matrix(edited), "risk", [], str(edited))
    assert (chosen.owner.primary_team, chosen.targets) == ("Team Z", ["Parent #999"])

    document["rows"][2]["lanes"] = ["nowhere"]
    edited.write_text(yaml.safe_dump(document))
    with pytest.raises(UsageError, match="unknown lane"):
        load_matrix(edited)
    del document["rows"][2]
    edited.write_text(yaml.safe_dump(document))
    with pytest.raises(UsageError, match="no row for lane risk"):
        load_matrix(edited)


# -- guardrails from spans and audit events ------------------------------------------------


def span(sid: str, parent: str, service: str, name: str, kind: str, **attrs: Any) -> Span:
    return Span(
        "t1",
        sid,
        parent,
        name,
        kind,
        service,
        0.0,
        1.0,
        "UNSET",
        {"gate4.request_id": "req-1", **attrs},
    )


def trace_of(*spans: Span) -> dict[str, RequestTrace]:
    by_id = {s.span_id: s for s in spans}
    roots = []
    for s in spans:
        if s.parent_id in by_id:
            by_id[s.parent_id].children.append(s)
        else:
            roots.append(s)
    return {"req-1": RequestTrace("req-1", roots)}


def test_platform_api_only_and_no_provider_calls_from_spans() -> None:
    through_gateway = trace_of(
        span("a", "", "gateway", "POST /v1/orders", "SERVER"),
        span(
            "b",
            "a",
            "gateway",
            "/gate4.execution.v1.ExecutionService/SubmitOrder",
            "CLIENT",
            **{"rpc.service": "gate4.execution.v1.ExecutionService"},
        ),
        span("c", "b", "execution", "/gate4.execution.v1.ExecutionService/SubmitOrder", "SERVER"),
    )
    assert platform_operation("GET /v1/deployments/dep_1?x=1") == "getDeployment"
    assert platform_operation("GET /internal/debug") is None
    assert guardrails.platform_api_only(through_gateway).value == guardrails.YES
    calls = guardrails.no_provider_direct_calls(through_gateway, "127.0.0.1:8080")
    assert calls.value == guardrails.YES

    direct = trace_of(
        span("c", "", "execution", "/gate4.execution.v1.ExecutionService/X", "SERVER")
    )
    verdict = guardrails.platform_api_only(direct)
    assert verdict.value == guardrails.NO and "called directly" in verdict.reason
    assert guardrails.platform_api_only({"req-1": RequestTrace("req-1")}).value == "unconfirmed"

    client = trace_of(
        span(
            "z", "", "openclaw-skill", "HTTP POST", "CLIENT", **{"http.url": "https://api.llm/v1"}
        ),
        span("y", "", "gateway", "POST /v1/orders", "SERVER"),
    )
    verdict = guardrails.no_provider_direct_calls(client, "127.0.0.1:8080")
    assert verdict.value == guardrails.NO and "api.llm:443" in verdict.reason


def event(seq: int, type_: str, outcome: str, **fields: Any) -> dict[str, Any]:
    data = fields.pop("data", {})
    return {
        "eventId": f"e{seq}",
        "sequence": seq,
        "type": type_,
        "outcome": outcome,
        "occurredAt": f"2026-01-01T10:00:{seq:02d}Z",
        "requestId": f"req-{seq}",
        "data": data,
        **fields,
    }


def test_risk_fail_closed_from_the_audit_trail() -> None:
    approved = event(1, "risk.decision", "APPROVED", data={"decisionId": "d1", "approved": True})
    order = event(2, "order.accepted", "APPROVED", orderId="o1", data={"decisionId": "d1"})
    trip = event(
        3, "killswitch.tripped", "KILL_SWITCH_TRIPPED", data={"scope": "tenant", "scopeId": "t"}
    )
    flatten = event(
        4,
        "order.accepted",
        "RISK_UNAVAILABLE",
        orderId="o2",
        data={"reduceOnly": True, "flatten": "trip", "riskDecided": False},
    )
    refused = event(5, "order.rejected", "KILL_SWITCH_ENGAGED")
    ok = guardrails.risk_fail_closed("t", [order, flatten], [approved], [trip], [], [refused])
    assert ok.value == guardrails.YES and "1 command(s) refused by a kill switch" in ok.reason

    unapproved = event(6, "order.accepted", "APPROVED", orderId="o3", data={"decisionId": "dX"})
    bad = guardrails.risk_fail_closed("t", [unapproved], [approved], [], [], [])
    assert bad.value == guardrails.NO and "without an APPROVED risk decision" in bad.reason

    undecided = event(7, "deployment.created", "RISK_UNAVAILABLE", deploymentId="dep")
    assert guardrails.risk_fail_closed("t", [undecided], [], [], [], []).value == guardrails.NO

    approved2 = event(8, "risk.decision", "APPROVED", data={"decisionId": "d8", "approved": True})
    during = event(9, "order.accepted", "APPROVED", orderId="o9", data={"decisionId": "d8"})
    held = guardrails.risk_fail_closed("t", [during], [approved2], [trip], [], [])
    assert held.value == guardrails.NO and "while the kill switch held tenant t" in held.reason
    assert guardrails.risk_fail_closed("t", None, [], [], [], []).value == "unconfirmed"


# -- contract results ------------------------------------------------------------------------------


def test_a_junit_file_from_the_runbooks_command_is_attached(tmp_path: Path) -> None:
    cases = "".join(
        f'<testcase classname="tests.contracts.{Path(f).stem}" name="test_a" time="0.1"/>'
        for f in RISK_CONTRACTS
    )
    failing = (
        '<testcase classname="tests.contracts.test_risk_pretrade_checks.TestX" '
        'name="test_b"><failure message="boom"/></testcase>'
    )
    junit = tmp_path / "risk.xml"
    junit.write_text(
        f'<testsuites><testsuite name="pytest" timestamp="2026-01-01T10:00:00" time="12.5">'
        f"{cases}{failing}</testsuite></testsuites>"
    )
    run = contracts.from_junit(LANES["risk"], junit)
    assert (run.status, run.source, run.exit_code) == ("failed", "junit", 1)
    assert run.summary == "6 passed, 1 failed in 12.50s"
    assert run.per_file["tests/contracts/test_risk_pretrade_checks.py"] == {
        "passed": 1,
        "failed": 1,
    }
    assert json.loads(json.dumps(run.as_json()))["source"] == "junit"

    partial = tmp_path / "partial.xml"
    partial.write_text(
        '<testsuite><testcase classname="tests.contracts.test_risk_policy_schema" '
        'name="t"/></testsuite>'
    )
    with pytest.raises(UsageError, match="does not cover"):
        contracts.from_junit(LANES["risk"], partial)

    skipped = contracts.skipped(LANES["risk"], "drill")
    assert (skipped.status, skipped.line) == ("skipped", "not executed: drill")


def _tiny_lane(root: Path, **files: str) -> Lane:
    """A lane whose contract tests are the given files under root/tests/contracts."""
    folder = root / "tests" / "contracts"
    folder.mkdir(parents=True)
    for name, body in files.items():
        (folder / f"{name}.py").write_text(body)
    names = (*files, "test_gone")
    return Lane("tiny", "B", "risk", tuple(f"tests/contracts/{n}.py" for n in names))


def test_the_lanes_contract_tests_run_without_the_operators_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", JWT)
    lane = _tiny_lane(
        tmp_path,
        test_ok="import os\n\ndef test_a():\n    assert 'TOKEN' not in os.environ\n",
        test_more="def test_b():\n    pass\n\ndef test_c():\n    pass\n",
    )
    run = contracts.run(lane, root=tmp_path)
    assert (run.status, run.source, run.exit_code) == ("passed", "run", 0), run.output
    assert run.files == ["tests/contracts/test_ok.py", "tests/contracts/test_more.py"]
    assert run.missing == ["tests/contracts/test_gone.py"]
    assert re.match(r"3 passed in [\d.]+s$", run.summary), run.summary
    assert run.line.startswith(
        "3 passed"
    ) and "(exit 0); missing: tests/contracts/test_gone.py" in (run.line)
    assert run.command.startswith(".venv/bin/python -m pytest tests/contracts/test_ok.py")


def test_a_failing_contract_test_fails_the_run_with_its_output(tmp_path: Path) -> None:
    lane = _tiny_lane(tmp_path, test_bad="def test_a():\n    assert 1 == 2, 'limits moved'\n")
    run = contracts.run(lane, root=tmp_path)
    assert (run.status, run.exit_code) == ("failed", 1)
    assert run.summary.startswith("1 failed") and "limits moved" in run.output


def test_a_contract_run_past_its_timeout_is_reported_as_failed(tmp_path: Path) -> None:
    lane = _tiny_lane(tmp_path, test_slow="import time\n\ndef test_a():\n    time.sleep(60)\n")
    run = contracts.run(lane, timeout=2, root=tmp_path)
    assert (run.status, run.summary) == ("failed", "timed out after 2s")


def test_a_lane_without_contract_tests_is_unavailable(tmp_path: Path) -> None:
    lane = Lane("empty", "B", "risk", ("tests/contracts/test_gone.py",))
    run = contracts.run(lane, root=tmp_path)
    assert run.status == "unavailable" and "none of the lane's contract tests exist" in run.reason
