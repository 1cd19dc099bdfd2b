"""One requestId and one trace across gateway, services and the audit trail."""

from __future__ import annotations

from typing import Any

from tests.support.stack import LiveStack, wait_for

DEPLOYMENT = {
    "strategyId": "trend-1",
    "accountId": "acc-corr",
    "instruments": ["BTC-USD"],
    "capitalAllocation": "5000",
    "mode": "paper",
}


def _trace_id(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def test_request_id_and_trace_cross_every_hop(live_stack: LiveStack) -> None:
    request_id = "req-correlation-0001"
    headers = live_stack.headers(tenant="corr")
    with live_stack.client(headers) as client:
        response = client.post(
            "/v1/deployments",
            json=DEPLOYMENT,
            headers={"X-Request-Id": request_id, "Idempotency-Key": "corr-key-0001"},
        )
        # No policy has been put for this tenant: the command is refused, fail closed.
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["outcome"] == "POLICY_INVALID"
        assert problem["requestId"] == request_id
        trace_id = problem["traceId"]

        def spans_of_request() -> dict[str, list[dict[str, Any]]] | None:
            found: dict[str, list[dict[str, Any]]] = {}
            for span in live_stack.spans():
                if span["attributes"].get("gate4.request_id") == request_id:
                    service = span["resource"]["attributes"]["service.name"]
                    found.setdefault(service, []).append(span)
            # Every hop's server span, not just any span of each process: spans are exported
            # in batches, so a process's client span can land before its server span.
            names = {
                s["name"]
                for spans in found.values()
                for s in spans
                if s["kind"] == "SpanKind.SERVER"
            }
            wanted = {
                "POST /v1/deployments",
                "/gate4.execution.v1.ExecutionService/CreateDeployment",
                "/gate4.risk.v1.RiskService/CheckDeployment",
            }
            return found if wanted <= names else None

        by_service = wait_for(spans_of_request)
        for spans in by_service.values():
            for span in spans:
                assert _trace_id(span) == trace_id
                assert span["attributes"]["gate4.tenant_id"] == "corr"
                assert span["attributes"]["gate4.user_id"] == "alice"
        # The execution -> risk hop is a child of the gateway -> execution hop.
        server_spans = {
            s["name"]: s
            for spans in by_service.values()
            for s in spans
            if s["kind"] == "SpanKind.SERVER"
        }
        assert "/gate4.execution.v1.ExecutionService/CreateDeployment" in server_spans
        assert "/gate4.risk.v1.RiskService/CheckDeployment" in server_spans

        def audit_events() -> list[dict[str, Any]] | None:
            events = client.get("/v1/audit/events", params={"requestId": request_id}).json()
            return events["events"] or None

        events = wait_for(audit_events)
        decision = next(e for e in events if e["type"] == "risk.decision")
        assert decision["requestId"] == request_id
        assert decision["traceId"] == trace_id
        assert decision["outcome"] == "POLICY_INVALID"
        assert decision["tenantId"] == "corr"
        assert decision["userId"] == "alice"
        assert decision["source"] == "risk"


def test_json_logs_carry_correlation(live_stack: LiveStack) -> None:
    request_id = "req-logs-correlation-01"
    with live_stack.client(live_stack.headers(tenant="logs")) as client:
        client.get("/v1/orders/ord_missing", headers={"X-Request-Id": request_id})

    def log_line() -> dict[str, Any] | None:
        import json

        path = live_stack.var_dir / "logs" / "execution.log"
        for line in path.read_text().splitlines():
            if request_id in line:
                record: dict[str, Any] = json.loads(line)
                return record
        return None

    record = wait_for(log_line)
    assert record["request_id"] == request_id
    assert record["tenant_id"] == "logs"
    assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
    assert record["service"] == "execution"
