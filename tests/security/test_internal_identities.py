"""Internal calls are authenticated per service, and each RPC admits only its callers.

Against real processes: `security_stack` (random token per identity, explicit digests), a
stack on mutual TLS with the dev CA `gate4 dev up` creates (certificates are the identities),
and an audit process on server-only TLS (tokens are the identities, inside TLS). Each shows
a real process refusing a call from the wrong identity and admitting the right one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cli.devca import ensure_dev_ca
from cli.devstack import Stack
from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime import errors
from services.runtime.config import DEV_SERVICE_TOKENS
from services.runtime.metadata import MD_REQUEST_ID, MD_SERVICE_TOKEN, MD_TENANT_ID
from tests.security.conftest import SecurityStack
from tests.support.stack import LiveStack, start_stack, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEMO_POLICY = ROOT / "cli" / "demo-risk-policy.json"

Call = Callable[..., Any]


def outcome(call: Call, request: Any, metadata: Any = ()) -> str:
    """OK, or the refusal: the domain code for a call that was admitted and then failed,
    UNAUTHENTICATED / FORBIDDEN when the caller was not admitted, the transport's status
    name when no call could be made at all."""
    try:
        call(request, metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        error = errors.from_rpc_error(exc)
        if isinstance(error, errors.UnmappedError):
            return str(exc.code().name)
        return error.error_code()
    return "OK"


def token_metadata(token: str, tenant: str = "t-identity") -> tuple[tuple[str, str], ...]:
    md = [(MD_TENANT_ID, tenant), (MD_REQUEST_ID, f"req_{uuid.uuid4().hex}")]
    return (*md, (MD_SERVICE_TOKEN, token)) if token else tuple(md)


def test_each_rpc_admits_only_the_identities_of_its_table(security_stack: SecurityStack) -> None:
    env, ports = security_stack.env, security_stack.live.stack.ports
    token = {n: env[f"GATE4_{n.upper()}_SERVICE_TOKEN"] for n in ("gateway", "risk", "execution")}
    with (
        grpc.insecure_channel(f"127.0.0.1:{ports['risk']}") as risk_channel,
        grpc.insecure_channel(f"127.0.0.1:{ports['execution']}") as execution_channel,
        grpc.insecure_channel(f"127.0.0.1:{ports['audit']}") as audit_channel,
    ):
        risk = risk_pb2_grpc.RiskServiceStub(risk_channel)
        execution = execution_pb2_grpc.ExecutionServiceStub(execution_channel)
        audit = audit_pb2_grpc.AuditServiceStub(audit_channel)
        check = risk_pb2.CheckOrderRequest()
        enforce = execution_pb2.EnforceKillSwitchRequest(scope="planet", scope_id="x")
        append = audit_pb2.AppendRequest()

        # Only execution asks risk for a pre-trade decision.
        assert outcome(risk.CheckOrder, check, token_metadata(token["gateway"])) == "FORBIDDEN"
        assert outcome(risk.CheckOrder, check, token_metadata(token["risk"])) == "FORBIDDEN"
        admitted = outcome(risk.CheckOrder, check, token_metadata(token["execution"]))
        assert admitted not in ("FORBIDDEN", "UNAUTHENTICATED")
        # Only risk enforces a kill switch on execution (its bad scope is a 400, once admitted).
        assert outcome(execution.EnforceKillSwitch, enforce, token_metadata(token["gateway"])) == (
            "FORBIDDEN"
        )
        assert outcome(execution.EnforceKillSwitch, enforce, token_metadata(token["risk"])) == (
            "VALIDATION_FAILED"
        )
        # The gateway reads the audit trail but never writes it.
        assert outcome(audit.Append, append, token_metadata(token["gateway"])) == "FORBIDDEN"
        assert outcome(audit.Append, append, token_metadata(token["execution"])) == (
            "VALIDATION_FAILED"
        )
        verify = audit_pb2.VerifyRequest()
        assert outcome(audit.Verify, verify, token_metadata(token["gateway"])) == "OK"
        # No token, the dev default (this stack has its own), or a guess: not even identified.
        for guess in ("", DEV_SERVICE_TOKENS["execution"], token["execution"] + "x"):
            assert outcome(risk.CheckOrder, check, token_metadata(guess)) == "UNAUTHENTICATED"

    log = (security_stack.live.var_dir / "logs" / "risk.log").read_text()
    refusals = [json.loads(line) for line in log.splitlines() if '"FORBIDDEN"' in line]
    assert any(r.get("rpc.method") == "/gate4.risk.v1.RiskService/CheckOrder" for r in refusals)


# -- mutual TLS: certificates are the identities ---------------------------------------------


@pytest.fixture(scope="module")
def mtls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    live = start_stack(tmp_path_factory.mktemp("mtls-stack"), {"GATE4_TLS": "mtls"})
    yield live
    live.stack.stop()


def cert_channel(live: LiveStack, service: str, identity: str | None) -> grpc.Channel:
    """A channel that trusts the dev CA and, unless identity is None, presents that
    identity's certificate."""
    folder = live.var_dir / "tls"
    ca = (folder / "ca.crt").read_bytes()
    if identity is None:
        credentials = grpc.ssl_channel_credentials(ca)
    else:
        key, cert = (folder / f"{identity}.key").read_bytes(), (folder / f"{identity}.crt")
        credentials = grpc.ssl_channel_credentials(ca, key, cert.read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{live.stack.ports[service]}", credentials)


def test_the_platform_runs_on_mutual_tls_with_the_dev_ca(mtls_stack: LiveStack) -> None:
    folder = mtls_stack.var_dir / "tls"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["ca.crt", "ca.key"]
        + [f"{n}.{ext}" for n in ("audit", "conversation", "execution", "gateway", "risk")
           for ext in ("crt", "key")]
    )  # fmt: skip
    assert all((folder / f).stat().st_mode & 0o077 == 0 for f in ("ca.key", "risk.key"))
    headers = mtls_stack.headers(tenant="tls-desk")
    with httpx.Client(base_url=mtls_stack.url, headers=headers, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        policy = {"policy": json.loads(DEMO_POLICY.read_text()), "reason": "mtls"}
        assert http.put("/v1/risk/policy", json=policy).status_code == 200
        mark = {"marks": [{"instrument": "BTC-USD", "price": "50000"}]}
        assert http.post("/v1/sandbox/marks", json=mark).status_code == 200
        key = {"Idempotency-Key": f"mtls-{uuid.uuid4().hex}"}
        deployment = http.post(
            "/v1/deployments",
            json={"strategyId": "s", "accountId": "acc-1", "instruments": ["BTC-USD"],
                  "capitalAllocation": "10000", "mode": "paper"},
            headers=key,
        )  # fmt: skip
        assert deployment.status_code == 201, deployment.text
        dep = deployment.json()["deploymentId"]
        order = http.post(
            "/v1/orders",
            json={"deploymentId": dep, "instrument": "BTC-USD", "side": "buy", "type": "market",
                  "quantity": "0.01"},
            headers={"Idempotency-Key": f"mtls-{uuid.uuid4().hex}"},
        )  # fmt: skip
        assert order.status_code == 201, order.text
        session = http.post(
            "/v2/conversations/sessions",
            json={"channel": "openclaw", "topic": "mtls", "metadata": {"notificationsOptIn": True}},
        )
        assert session.status_code == 201, session.text
        turn = http.post(
            f"/v2/conversations/sessions/{session.json()['sessionId']}/turns",
            json={"message": "status"},
        )
        assert turn.status_code == 201, turn.text
        # Each service's outbox reached audit over mTLS too.
        expected = {"risk.decision", "deployment.created", "conversation.turn"}
        wait_for(
            lambda: expected <= {e["type"] for e in http.get("/v1/audit/events").json()["events"]}
        )


def test_on_mutual_tls_a_service_refuses_the_wrong_certificate(
    mtls_stack: LiveStack, tmp_path: Path
) -> None:
    check = risk_pb2.CheckOrderRequest()
    md = token_metadata("")  # no token: the certificate speaks for the caller
    with cert_channel(mtls_stack, "risk", "gateway") as ch:
        assert outcome(risk_pb2_grpc.RiskServiceStub(ch).CheckOrder, check, md) == "FORBIDDEN"
    with cert_channel(mtls_stack, "risk", "execution") as ch:
        admitted = outcome(risk_pb2_grpc.RiskServiceStub(ch).CheckOrder, check, md)
        assert admitted not in ("FORBIDDEN", "UNAUTHENTICATED", "UNAVAILABLE")
    with cert_channel(mtls_stack, "execution", "gateway") as ch:
        enforce = execution_pb2.EnforceKillSwitchRequest(scope="planet", scope_id="x")
        stub = execution_pb2_grpc.ExecutionServiceStub(ch)
        assert outcome(stub.EnforceKillSwitch, enforce, md) == "FORBIDDEN"
    # No client certificate, plaintext, or a certificate of another CA: no call at all.
    with cert_channel(mtls_stack, "risk", None) as ch:
        assert outcome(risk_pb2_grpc.RiskServiceStub(ch).CheckOrder, check, md) == "UNAVAILABLE"
    with grpc.insecure_channel(f"127.0.0.1:{mtls_stack.stack.ports['risk']}") as ch:
        assert outcome(risk_pb2_grpc.RiskServiceStub(ch).CheckOrder, check, md) == "UNAVAILABLE"
    ensure_dev_ca(tmp_path / "other-ca")
    other = tmp_path / "other-ca"
    credentials = grpc.ssl_channel_credentials(
        (mtls_stack.var_dir / "tls" / "ca.crt").read_bytes(),
        (other / "execution.key").read_bytes(),
        (other / "execution.crt").read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{mtls_stack.stack.ports['risk']}", credentials) as ch:
        assert outcome(risk_pb2_grpc.RiskServiceStub(ch).CheckOrder, check, md) == "UNAVAILABLE"


# -- server-only TLS: tokens identify callers inside TLS ---------------------------------------


def test_on_server_tls_tokens_still_name_the_caller(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "var", env={"GATE4_TLS": "tls"}, names=("audit",))
    try:
        stack.start(timeout=60)
        folder = tmp_path / "var" / "tls"
        address = f"127.0.0.1:{stack.ports['audit']}"
        credentials = grpc.ssl_channel_credentials((folder / "ca.crt").read_bytes())
        append = audit_pb2.AppendRequest()
        with grpc.secure_channel(address, credentials) as ch:
            stub = audit_pb2_grpc.AuditServiceStub(ch)
            dev = DEV_SERVICE_TOKENS
            assert outcome(stub.Append, append, token_metadata(dev["risk"])) == "VALIDATION_FAILED"
            assert outcome(stub.Append, append, token_metadata(dev["gateway"])) == "FORBIDDEN"
            assert outcome(stub.Append, append, token_metadata("")) == "UNAUTHENTICATED"
        with grpc.insecure_channel(address) as ch:
            stub = audit_pb2_grpc.AuditServiceStub(ch)
            assert outcome(stub.Append, append, token_metadata(dev["risk"])) == "UNAVAILABLE"
    finally:
        stack.stop()
