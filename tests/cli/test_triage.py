"""`gate4 triage conversation|risk` reaches each leaf of the runbook's two decision trees under
induced conditions, on a live platform (a tenant of its own per test; the tests that kill
processes have a platform of their own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from cli.errors import EXIT_OK, EXIT_UNAVAILABLE
from cli.incident.conversation_checks import NOTIFYING_EVENTS
from services.conversation.notifications import KINDS
from tests.support.faults import paused
from tests.support.incidents import (
    engage_without_breach,
    reject_orders,
    replace_policy,
    spans_exported,
    trip_drawdown,
)
from tests.support.live import RunCli, Tenant, new_tenant, run_cli
from tests.support.stack import LiveStack, wait_for

__all__ = ["run_cli"]


def triage(run: RunCli, tenant: Tenant, *argv: str) -> tuple[int, dict[str, Any], str]:
    """Runs `gate4 triage ... --output json`; returns exit code, document and stderr."""
    result = run(
        ["triage", *argv, "--output", "json", "--var-dir", str(tenant.live.var_dir)],
        tenant.env(),
    )
    return result.exit_code, json.loads(result.stdout), result.stderr


def answers(document: dict[str, Any]) -> dict[str, str]:
    return {step["node"]: step["answer"] for step in document["steps"]}


def evidence(document: dict[str, Any], node: str) -> list[dict[str, Any]]:
    step = next(s for s in document["steps"] if s["node"] == node)
    return list(step["evidence"])


# -- Runbook B ---------------------------------------------------------------------------------


def test_risk_reaches_d_after_a_drawdown_trip(live_stack: LiveStack, run_cli: RunCli) -> None:
    tenant = new_tenant(live_stack)
    trip = trip_drawdown(tenant)
    code, document, _ = triage(run_cli, tenant, "risk", "--deployment", trip.deployment_id)
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=yes > C=yes > D", "D")
    assert document["action"] == "Maintain block and execute controlled recovery plan"
    checks = evidence(document, "C")
    assert {c["check"] for c in checks} == {
        f"switch tenant {tenant.tenant_id}",
        f"switch account {trip.account_id}",
        f"switch deployment {trip.deployment_id}",
    }
    for check in checks:
        assert check["result"] == "pass"
        assert "3 of 3 confirmations under risk-policy.v1@1" in check["detail"]
        assert "killswitch.tripped" in check["detail"] and "DRAWDOWN_BREACH" in check["detail"]
    assert any("do not bypass risk gates" in line for line in document["containment"])

    text = run_cli(["triage", "risk", "--var-dir", str(live_stack.var_dir)], tenant.env())
    assert text.exit_code == EXIT_OK
    assert "branch: B=yes > C=yes > D" in text.stdout
    assert "D  Maintain block and execute controlled recovery plan" in text.stdout
    assert tenant.token not in text.stdout + text.stderr


def test_risk_reaches_e_for_a_manual_engagement_without_breach(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack)
    engage_without_breach(tenant)
    code, document, _ = triage(run_cli, tenant, "risk")
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=yes > C=no > E", "E")
    (check,) = evidence(document, "C")
    assert check["result"] == "fail"
    assert "manual engagement without drawdown evidence" in check["detail"]
    assert any("roll back the invalid policy input" in line for line in document["containment"])


def test_risk_reaches_e_when_the_trip_rests_on_a_replaced_policy(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack)
    trip = trip_drawdown(tenant)
    replace_policy(tenant, max_drawdown_pct="20")
    code, document, _ = triage(run_cli, tenant, "risk", "--deployment", trip.deployment_id)
    assert code == EXIT_OK and document["leaf"] == "E"
    details = " ".join(c["detail"] for c in evidence(document, "C"))
    assert "risk-policy.v1@1 is no longer the active policy (active: risk-policy.v1@2)" in details


def test_risk_reaches_g_on_rising_pretrade_rejections(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack)
    rejected = reject_orders(tenant, count=4)
    code, document, _ = triage(run_cli, tenant, "risk")
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=no > F=yes > G", "G")
    (trend,) = evidence(document, "F")
    assert trend["data"]["current"] == 4 and trend["data"]["previous"] == 0
    assert trend["data"]["byOutcome"] == {"ORDER_QUANTITY_LIMIT": 4}
    assert rejected[-1] in trend["data"]["requestIds"]
    # Below the threshold it is no rise: the execution path is next.
    code, quiet, _ = triage(run_cli, tenant, "risk", "--min-rejections", "10")
    assert quiet["leaf"] == "H"


def test_risk_reaches_h_when_nothing_holds_or_rises(live_stack: LiveStack, run_cli: RunCli) -> None:
    tenant = new_tenant(live_stack)
    code, document, _ = triage(run_cli, tenant, "risk")
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=no > F=no > H", "H")
    assert document["context"][0]["check"] == "execution path"


# -- Runbook A ---------------------------------------------------------------------------------


def test_conversation_reaches_h_on_a_healthy_platform(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack)
    with tenant.client(channel="openclaw") as gate4:
        session = gate4.create_session(
            topic="drill", metadata={"notificationsOptIn": True, "clientLane": "cli"}
        )["sessionId"]
    engage_without_breach(tenant)  # a notifying event the session must get

    def notified() -> bool:
        with tenant.client() as gate4:
            listing = gate4.list_notifications(session, include_delivered=True)
        return bool(listing["notifications"])

    wait_for(notified, timeout=20)
    code, document, _ = triage(run_cli, tenant, "conversation", "--session", session)
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=yes > D=yes > F=yes > H", "H")
    assert answers(document) == {"B": "yes", "D": "yes", "F": "yes"}
    checks = {e["check"]: e for e in evidence(document, "F")}
    assert checks["memory"]["result"] == "pass"
    assert checks["notifications"]["result"] == "pass"
    assert "1 of 1 notifying audit events" in checks["notifications"]["detail"]
    d_checks = {e["check"]: e["result"] for e in evidence(document, "D")}
    assert d_checks["repro: create session"] == d_checks["canonical error"] == "pass"
    assert d_checks["session channel"] == "pass"


def test_conversation_reaches_e_for_a_malformed_payload(
    live_stack: LiveStack, run_cli: RunCli, tmp_path: Path
) -> None:
    tenant = new_tenant(live_stack)
    request_id = "req-malformed-payload-01"
    with httpx.Client(base_url=live_stack.url, timeout=10) as http:
        reply = http.post(
            "/v2/conversations/sessions",
            json={"channel": "carrier-pigeon", "topic": "incident-triage"},
            headers={**tenant_headers(tenant), "X-Request-Id": request_id},
        )
    assert reply.status_code == 400
    spans_exported(live_stack, request_id)
    code, document, _ = triage(run_cli, tenant, "conversation", "--request-id", request_id)
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=yes > D=no > E", "E")
    failed = [e for e in evidence(document, "D") if e["result"] == "fail"]
    assert [e["check"] for e in failed] == [f"request {request_id}"]
    assert "POST /v2/conversations/sessions answered 400 VALIDATION_FAILED" in failed[0]["detail"]

    payload = tmp_path / "client-body.json"
    payload.write_text(json.dumps({"channel": "openclaw", "topic": "", "extra": 1}))
    code, replayed, _ = triage(
        run_cli, tenant, "conversation", "--payload", str(payload), "--no-probes"
    )
    assert replayed["leaf"] == "E"
    (refused,) = [e for e in evidence(replayed, "D") if e["check"] == "payload"]
    assert refused["result"] == "fail" and "400 VALIDATION_FAILED" in refused["detail"]


def test_conversation_reaches_e_when_the_credentials_are_refused(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack)
    env = tenant.env(GATE4_API_KEY=live_stack.api_key("another-tenant"))
    result = run_cli(
        ["triage", "conversation", "--output", "json", "--var-dir", str(live_stack.var_dir)], env
    )
    document = json.loads(result.stdout)
    assert (result.exit_code, document["leaf"]) == (EXIT_OK, "E")
    failed = next(e for e in evidence(document, "D") if e["result"] == "fail")
    assert "403 TENANT_MISMATCH" in failed["detail"] and "X-API-Key" in failed["detail"]


def test_conversation_probes_without_the_trader_role_are_not_a_contract_failure(
    live_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(live_stack, roles=["viewer", "sre"])
    code, document, _ = triage(run_cli, tenant, "conversation")
    assert (code, document["leaf"]) == (EXIT_OK, "H")
    (probe,) = [e for e in evidence(document, "D") if e["check"] == "repro: create session"]
    assert probe["result"] == "info" and "trader role" in probe["detail"]


def test_the_notifying_events_are_the_conversation_services() -> None:
    assert {k: v.outcomes for k, v in KINDS.items()} == NOTIFYING_EVENTS


# -- dead services -----------------------------------------------------------------------------


def test_dead_services_reach_g_c_and_an_undetermined_risk_tree(
    private_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(private_stack)
    # Audit down: routes answer, but notifications cannot follow the audit stream.
    private_stack.stack.processes["audit"].kill()
    code, document, _ = triage(run_cli, tenant, "conversation")
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=yes > D=yes > F=no > G", "G")
    feed = next(e for e in evidence(document, "F") if e["check"] == "notification feed")
    assert feed["result"] == "fail" and "audit is UNREACHABLE" in feed["detail"]
    assert any("notificationsOptIn=false" in line for line in document["containment"])
    # Risk cannot read the audit trail: the walk stops, fail closed.
    code, risk, stderr = triage(run_cli, tenant, "risk")
    assert code == EXIT_UNAVAILABLE and risk["leaf"] is None
    assert risk["branch"] == "B=no > F=undetermined > undetermined"
    assert "fail closed" in stderr
    # Conversation down: the contract routes are not healthy.
    private_stack.stack.processes["conversation"].kill()
    code, document, _ = triage(run_cli, tenant, "conversation")
    assert code == EXIT_OK
    assert (document["branch"], document["leaf"]) == ("B=no > C", "C")
    (readyz,) = [e for e in evidence(document, "B") if e["check"] == "readyz"]
    assert readyz["result"] == "fail" and "conversation UNREACHABLE" in readyz["detail"]


def test_a_hung_risk_is_reported_down_at_once_not_waited_for(
    private_stack: LiveStack, run_cli: RunCli
) -> None:
    tenant = new_tenant(private_stack)
    with paused(private_stack.stack.processes["risk"]):
        code, risk, stderr = triage(run_cli, tenant, "risk")
        _, conversation, _ = triage(run_cli, tenant, "conversation", "--no-probes")
    assert code == EXIT_UNAVAILABLE and risk["leaf"] is None
    (switches,) = evidence(risk, "B")
    assert switches["result"] == "unknown"
    assert "DEPENDENCY_DOWN: risk is UNREACHABLE on GET /readyz: not asked" in switches["detail"]
    assert stderr.startswith("gate4: error: TRIAGE_UNDETERMINED:")
    # Runbook A does not depend on risk: its walk still reaches a leaf.
    assert conversation["leaf"] == "H", conversation["branch"]


def tenant_headers(tenant: Tenant) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {tenant.token}",
        "X-API-Key": tenant.api_key,
        "X-Tenant-Id": tenant.tenant_id,
        "X-User-Id": tenant.user_id,
    }
