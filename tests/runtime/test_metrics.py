"""Per-service metrics: a real service exports its RPCs and outbox on its own metrics port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cli.devstack import ManagedProcess, free_port, stack_env
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime import metrics
from services.runtime.config import Settings
from services.runtime.metadata import MD_USER_ID
from tests.support import rpc
from tests.support.stack import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class RunningRisk:
    grpc_port: int
    metrics_port: int

    def scrape(self) -> Samples:
        resp = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        assert resp.status_code == 200
        return _samples(resp.text)


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample whose labels include `labels` (None when there is none)."""
    for (sample, have), value in samples.items():
        if sample == name and set(labels.items()) <= have:
            return value
    return None


@pytest.fixture(scope="module")
def risk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRisk]:
    """Risk alone: audit and execution are ports nobody listens on, so its audit events stay
    in the outbox (the backlog the metrics must show)."""
    var = tmp_path_factory.mktemp("metrics-risk")
    ports = {"audit": free_port(), "risk": free_port(), "execution": free_port()}
    env = stack_env(var, {**ports, "conversation": 1, "gateway": 1})
    env["GATE4_RISK_METRICS_PORT"] = str(free_port())
    proc = ManagedProcess("risk", env, var / "logs" / "risk.log")
    proc.start()
    try:
        proc.wait_ready(60)
        yield RunningRisk(ports["risk"], int(env["GATE4_RISK_METRICS_PORT"]))
    finally:
        proc.stop()


def test_rpcs_are_counted_by_method_and_code_and_the_outbox_backlog_shows(
    risk: RunningRisk,
) -> None:
    tenant = f"mx-{uuid.uuid4().hex[:8]}"
    officer = (*rpc.metadata(tenant, roles=["risk-officer"]), (MD_USER_ID, "olga"))
    with rpc.channel(risk.grpc_port) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        stub.ListKillSwitches(risk_pb2.ListKillSwitchesRequest(), metadata=rpc.metadata(tenant))
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPolicy(risk_pb2.GetPolicyRequest(), metadata=rpc.metadata(tenant))
        code, error = rpc.rpc_error(missing)
        stub.EngageKillSwitch(
            risk_pb2.EngageKillSwitchRequest(
                ref=risk_pb2.KillSwitchRef(scope="tenant", scope_id=tenant), reason="metrics"
            ),
            metadata=officer,
        )

    service = "gate4.risk.v1.RiskService"
    handled = "gate4_rpc_server_handled_total"
    samples = risk.scrape()
    listed = _value(samples, handled, grpc_service=service, grpc_method="ListKillSwitches")
    assert listed == 1
    assert _value(samples, handled, grpc_method="ListKillSwitches", grpc_code="OK") == 1
    assert (
        _value(
            samples,
            handled,
            grpc_method="GetPolicy",
            grpc_code=code.name,
            error_code=error.error_code(),
        )
        == 1
    )
    assert _value(samples, handled, grpc_method="EngageKillSwitch", grpc_code="OK") == 1
    timed = _value(
        samples,
        "gate4_rpc_server_handling_seconds_count",
        grpc_method="EngageKillSwitch",
        grpc_code="OK",
    )
    assert timed == 1
    # Health checks are not RPCs of the service: not counted.
    assert _value(samples, handled, grpc_service="grpc.health.v1.Health") is None

    # The engagement's audit event cannot ship (audit is down): the shipper counts it.
    backlog = wait_for(
        lambda: _value(risk.scrape(), "gate4_outbox_backlog", service="risk"), timeout=15
    )
    assert backlog >= 1
    samples = risk.scrape()
    assert _value(samples, "gate4_outbox_max_backlog", service="risk") == 10_000
    assert _value(samples, "gate4_outbox_reserve", service="risk") == 1_000
    assert _value(samples, "gate4_outbox_reserve_in_use", service="risk") == 0
    batches = _value(samples, "gate4_db_group_commit_batches_total", database="risk")
    writes = _value(samples, "gate4_db_group_commit_writes_total", database="risk")
    assert batches is not None and writes is not None and writes >= batches >= 1


def test_the_metrics_port_follows_the_service_address_and_0_turns_it_off() -> None:
    settings = Settings(risk_addr="0.0.0.0:50052", risk_metrics_port=9152)
    assert settings.metrics_addr("risk") == ("0.0.0.0", 9152)
    assert Settings(audit_addr="[::]:50051", audit_metrics_port=9151).metrics_addr("audit") == (
        "::",
        9151,
    )
    assert Settings().metrics_addr("execution") is None


def test_gauge_callbacks_are_read_at_scrape_time_and_a_failing_one_is_left_out() -> None:
    state = {"engaged": 1.0}
    metrics.register_gauge_callback(
        "gate4_test_switch_engaged",
        "Probe gauge.",
        ["tenant"],
        lambda: [(("acme",), state["engaged"])],
    )
    samples = _samples(generate_latest(REGISTRY).decode())
    assert _value(samples, "gate4_test_switch_engaged", tenant="acme") == 1.0
    state["engaged"] = 0.0
    samples = _samples(generate_latest(REGISTRY).decode())
    assert _value(samples, "gate4_test_switch_engaged", tenant="acme") == 0.0

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("database down")

    # Registering the name again replaces the callback.
    metrics.register_gauge_callback("gate4_test_switch_engaged", "Probe gauge.", ["tenant"], broken)
    failures = metrics.CALLBACK_FAILURES.labels("gate4_test_switch_engaged")
    before = failures._value.get()
    samples = _samples(generate_latest(REGISTRY).decode())
    assert _value(samples, "gate4_test_switch_engaged", tenant="acme") is None
    assert failures._value.get() == before + 1


def test_idempotency_claims_count_by_outcome() -> None:
    @dataclass
    class Claim:
        resumed: bool

    class Stored:
        pass

    def count(outcome: str) -> float:
        return float(metrics.IDEMPOTENCY_CLAIMS.labels("Probe", outcome)._value.get())

    before = {o: count(o) for o in ("claimed", "resumed", "replayed")}
    metrics.idempotency_claimed("Probe", Claim(resumed=False))
    metrics.idempotency_claimed("Probe", Claim(resumed=True))
    metrics.idempotency_claimed("Probe", Stored())
    metrics.idempotency_claimed("Probe", Stored())
    assert {o: count(o) - before[o] for o in before} == {
        "claimed": 1,
        "resumed": 1,
        "replayed": 2,
    }


def test_a_metrics_port_in_use_fails_the_start_naming_the_variable(tmp_path: Path) -> None:
    @dataclass
    class App:
        name: str = "risk"

    holder = metrics.MetricsServer(0, "127.0.0.1")
    try:
        settings = Settings(risk_metrics_port=holder.port)
        with pytest.raises(OSError, match="GATE4_RISK_METRICS_PORT"):
            metrics.start_metrics_server(settings, App())
    finally:
        holder.close()
