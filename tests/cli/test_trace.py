"""`gate4 trace`: one requestId's spans from every process, as a tree, from local span files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.stack import LiveStack


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
