"""The service runner: SIGTERM drains in-flight calls; spans go to OTLP when configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from cli.devstack import ManagedProcess, free_port, stack_env
from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support import rpc
from tests.support.stack import wait_for


def _start(
    module: str, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full = stack_env(
        tmp_path, {"audit": port, "risk": 1, "execution": 1, "conversation": 1, "gateway": 1}
    )
    full.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = ManagedProcess("audit", full, tmp_path / "unused.log", proc)
    probe.wait_ready(30)
    return proc, port


@pytest.fixture
def slow_service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port = _start("tests.support.slowservice", tmp_path)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones(
    slow_service: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = slow_service
    results: dict[str, object] = {}

    def slow_call() -> None:
        with rpc.channel(port) as channel:
            wait: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/gate4.test.v1.Slow/Wait"
            )
            try:
                results["reply"] = wait(b"1500", metadata=rpc.metadata("acme"), timeout=10)
            except grpc.RpcError as exc:
                results["error"] = exc.code()

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the call is now in flight
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with rpc.channel(port) as channel, pytest.raises(grpc.RpcError) as refused:
        again: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/gate4.test.v1.Slow/Wait"
        )
        again(b"0", metadata=rpc.metadata("acme"), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    caller.join(10)
    assert results == {"reply": b"done"}
    assert proc.wait(10) == 0


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            _Collector.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_spans_go_to_otlp_when_an_endpoint_is_set(tmp_path: Path) -> None:
    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    proc, port = _start(
        "services.audit",
        tmp_path,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    try:
        with rpc.channel(port) as channel:
            audit_pb2_grpc.AuditServiceStub(channel).Query(
                audit_pb2.QueryRequest(),
                metadata=rpc.metadata("acme", request_id="req-otlp-000001"),
            )

        def exported() -> list[dict[str, str]] | None:
            found = []
            for body in list(_Collector.received):
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value.string_value for a in span.attributes}
                            if attrs.get("gate4.request_id") == "req-otlp-000001":
                                found.append(attrs)
            return found or None

        spans = wait_for(exported)
        assert spans[0]["gate4.tenant_id"] == "acme"
        assert not (tmp_path / "traces").exists() or not any((tmp_path / "traces").iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        collector.shutdown()
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None
