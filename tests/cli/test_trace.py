"""`gate4 trace`: one requestId's spans from every process, as a tree, from local span files."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.risk_rig import policy_doc
from tests.support.stack import LiveStack, wait_for
from tests.support.trader import Trader


def _gate4(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60
    )


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _walk(child))]


def test_trace_tree_spans_three_processes(live_stack: LiveStack) -> None:
    request_id = "req-trace-tree-0001"
    with live_stack.client(live_stack.headers(tenant="trace")) as client:
        response = client.post(
            "/v1/deployments",
            json={
                "strategyId": "s1",
                "accountId": "acc-trace",
                "instruments": ["BTC-USD"],
                "capitalAllocation": "100",
            },
            headers={"X-Request-Id": request_id, "Idempotency-Key": "trace-key-0001"},
        )
    assert response.headers["x-request-id"] == request_id

    result = _gate4(
        "trace",
        request_id,
        "--var-dir",
        str(live_stack.var_dir),
        "--output",
        "json",
        "--wait",
        "15",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["requestId"] == request_id
    [root] = document["traces"]
    spans = _walk(root)
    assert root["service"] == "gateway" and root["kind"] == "SERVER"
    assert {"gateway", "execution", "risk"} <= {s["service"] for s in spans}
    assert len({s["traceId"] for s in spans}) == 1
    names = [s["name"] for s in spans]
    assert "/gate4.risk.v1.RiskService/CheckDeployment" in names

    tree = _gate4("trace", request_id, "--var-dir", str(live_stack.var_dir))
    assert tree.returncode == 0
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"trace {root['traceId']}  requestId {request_id}")
    assert any("└─" in line and "risk" in line for line in lines)
    assert any("POST /v1/deployments" in line for line in lines)


def test_an_orders_trace_shows_gateway_execution_risk_and_audit(live_stack: LiveStack) -> None:
    """The outbox ships audit events later, in calls of their own; the audit service records
    each append as a child of the span that recorded the event, under its requestId."""
    request_id = f"req-trace-order-{uuid.uuid4().hex[:12]}"
    trader = Trader.open(live_stack, f"trace-{uuid.uuid4().hex[:8]}")
    try:
        trader.put_policy(policy_doc())
        trader.mark("BTC-USD", "50000")
        dep_id = trader.deploy("acc-trace")["deploymentId"]
        order = trader.order(dep_id, "buy", "0.1", headers={"X-Request-Id": request_id})
        assert order.status_code == 201, order.text
    finally:
        trader.close()

    def traced() -> list[dict[str, Any]] | None:
        result = _gate4(
            "trace", request_id, "--var-dir", str(live_stack.var_dir), "--output", "json"
        )
        if result.returncode != 0:
            return None
        [root] = json.loads(result.stdout)["traces"]
        spans = _walk(root)
        appended = {s["attributes"].get("gate4.audit.event_type") for s in spans}
        return spans if {"order.accepted", "order.filled", "risk.decision"} <= appended else None

    spans = wait_for(traced, timeout=30, interval=0.5)
    assert {"gateway", "execution", "risk", "audit"} <= {s["service"] for s in spans}
    for span in spans:
        if span["service"] == "audit":
            assert span["name"] == "audit.append"
            assert span["attributes"]["gate4.request_id"] == request_id
    # The audit records stay under the order's requestId.
    with live_stack.client(live_stack.headers(tenant=trader.tenant)) as client:
        events = client.get("/v1/audit/events", params={"requestId": request_id}).json()["events"]
    assert {"order.accepted", "order.filled", "risk.decision"} <= {e["type"] for e in events}
    tree = _gate4("trace", request_id, "--var-dir", str(live_stack.var_dir))
    assert any("audit" in line and "audit.append" in line for line in tree.stdout.splitlines())


def _sdk_line(
    trace_id: str, span_id: str, parent: str, service: str, attributes: dict[str, str]
) -> str:
    """One span as the processes write it (the SDK's JSON, one line)."""
    return json.dumps(
        {
            "name": f"{service} work",
            "context": {"trace_id": f"0x{trace_id}", "span_id": f"0x{span_id}"},
            "kind": "SpanKind.INTERNAL",
            "parent_id": f"0x{parent}" if parent else None,
            "start_time": "2026-03-02T09:30:00.000000Z",
            "end_time": "2026-03-02T09:30:00.010000Z",
            "status": {"status_code": "UNSET"},
            "attributes": attributes,
            "resource": {"attributes": {"service.name": f"gate4-{service}"}},
        }
    )


def test_a_request_is_found_among_many_spans_across_rolled_over_files(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    wanted, other = "ab" * 16, "cd" * 16
    rid = {"gate4.request_id": "req-many-spans-01"}
    noise = [
        _sdk_line(f"{i:032x}", f"{i:016x}", "", "risk", {"gate4.request_id": f"req-noise-{i}"})
        for i in range(1, 3000)
    ]
    # The trace's spans are spread over three processes' files, one of them rolled over;
    # the audit span's parent is the execution span, and one span carries no requestId.
    (traces / "gateway.1.r1.jsonl").write_text(
        "\n".join([*noise[:1000], _sdk_line(wanted, "01" * 8, "", "gateway", rid)]) + "\n"
    )
    (traces / "execution.2.jsonl").write_text(
        "\n".join(
            [
                *noise[1000:2000],
                _sdk_line(wanted, "02" * 8, "01" * 8, "execution", rid),
                _sdk_line(wanted, "04" * 8, "02" * 8, "execution", {}),
                _sdk_line(other, "05" * 8, "", "execution", {"link": wanted}),
            ]
        )
        + "\n"
    )
    (traces / "audit.3.jsonl").write_text(
        "\n".join([*noise[2000:], _sdk_line(wanted, "03" * 8, "02" * 8, "audit", rid)])
        + '\n{"name": "half a line'
    )
    result = _gate4("trace", "req-many-spans-01", "--var-dir", str(tmp_path), "--output", "json")
    assert result.returncode == 0, result.stderr
    [root] = json.loads(result.stdout)["traces"]
    spans = _walk(root)
    assert sorted(s["spanId"] for s in spans) == ["01" * 8, "02" * 8, "03" * 8, "04" * 8]
    assert root["service"] == "gateway"
    [execution] = root["children"]
    assert sorted(c["service"] for c in execution["children"]) == ["audit", "execution"]


def test_unknown_request_id_is_exit_4(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    result = _gate4("trace", "req-never-seen-0001", "--var-dir", str(tmp_path))
    assert result.returncode == 4
    assert "req-never-seen-0001" in result.stderr


def test_reads_otlp_json_from_a_collector_file(tmp_path: Path) -> None:
    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    def span(span_id: str, parent: str, name: str, kind: int) -> dict[str, Any]:
        return {
            "traceId": "ab" * 16,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": "1000000000",
            "endTimeUnixNano": "1002000000",
            "attributes": [attr("gate4.request_id", "req-otlp-file-01")],
            "status": {"code": 2},
        }

    export = {
        "resourceSpans": [
            {"resource": {"attributes": [attr("service.name", "gate4-gateway")]},
             "scopeSpans": [{"spans": [span("01" * 8, "", "POST /v1/orders", 2)]}]},
            {"resource": {"attributes": [attr("service.name", "gate4-execution")]},
             "scopeSpans": [{"spans": [span("02" * 8, "01" * 8, "SubmitOrder", 2)]}]},
        ]
    }  # fmt: skip
    path = tmp_path / "collector.json"
    path.write_text(json.dumps(export) + "\n")
    result = _gate4("trace", "req-otlp-file-01", "--spans", str(path), "--output", "json")
    assert result.returncode == 0, result.stderr
    [root] = json.loads(result.stdout)["traces"]
    assert root["service"] == "gateway" and root["children"][0]["service"] == "execution"
    assert root["durationMs"] == 2.0 and root["status"] == "ERROR"
