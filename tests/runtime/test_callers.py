"""The callers table (services/runtime/callers.py) and caller identification
(services/runtime/identity.py), without processes; tests/security/test_internal_identities.py
runs them in real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate4.audit.v1 import audit_pb2
from gate4.conversation.v1 import conversation_pb2
from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from gateway.app import GATEWAY_IDENTITY
from gateway.operations import OPERATIONS
from services.runtime import errors
from services.runtime.callers import ALLOWED_CALLERS, authorize_caller
from services.runtime.config import IDENTITIES, Settings, token_digest
from services.runtime.identity import CallerIdentifier
from services.runtime.metadata import MD_SERVICE_TOKEN

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "portal" / "operations" / "gate4-security-model.md"


def every_rpc() -> set[str]:
    methods = set()
    for module in (audit_pb2, risk_pb2, execution_pb2, conversation_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return methods


def test_the_table_names_callers_for_every_rpc_of_the_protos_and_nothing_else() -> None:
    assert set(ALLOWED_CALLERS) == every_rpc()
    for method, callers in ALLOWED_CALLERS.items():
        assert callers and callers <= set(IDENTITIES), method


def test_the_gateway_may_call_every_rpc_of_the_platform_api() -> None:
    for op in OPERATIONS:
        matches = [m for m in ALLOWED_CALLERS if m.endswith(f"/{op.rpc}") and op.service in m]
        (method,) = matches
        assert GATEWAY_IDENTITY in ALLOWED_CALLERS[method], op.operation_id


def test_the_security_model_page_shows_the_same_table() -> None:
    rows = re.findall(r"^\| `(/gate4\.[^`]+)` \| ([a-z, ]+) \|$", PAGE.read_text(), re.M)
    documented = {method: frozenset(c.strip() for c in who.split(",")) for method, who in rows}
    assert documented == ALLOWED_CALLERS


def test_authorize_caller_refuses_what_the_table_does_not_list() -> None:
    authorize_caller("/gate4.risk.v1.RiskService/CheckOrder", "execution")
    with pytest.raises(errors.Forbidden) as refused:
        authorize_caller("/gate4.risk.v1.RiskService/CheckOrder", "gateway")
    assert "gateway" in refused.value.detail and "CheckOrder" in refused.value.detail
    with pytest.raises(errors.Forbidden):
        authorize_caller("/gate4.risk.v1.RiskService/NoSuchRpc", "gateway")


def test_callers_are_named_by_their_tokens_digest_or_certificate() -> None:
    settings = Settings()
    identifier = CallerIdentifier(settings)
    for name in IDENTITIES:
        token = settings.service_token_of(name)
        assert identifier.caller({MD_SERVICE_TOKEN: token}, {}) == name
    for metadata in ({}, {MD_SERVICE_TOKEN: "guess"}):
        with pytest.raises(errors.Unauthenticated):
            identifier.caller(metadata, {})
    # Explicit digests: a token is recognised by its SHA-256 alone.
    own = "a-token-only-the-risk-process-holds-0123456789"
    digests = ",".join(f"{n}={token_digest(own if n == 'risk' else n * 8)}" for n in IDENTITIES)
    assert (
        CallerIdentifier(Settings(service_token_digests=digests)).caller(
            {MD_SERVICE_TOKEN: own}, {}
        )
        == "risk"
    )
    # With mtls the certificate's common name is the identity, and tokens count for nothing.
    mtls = CallerIdentifier(Settings(tls="mtls"))
    assert mtls.caller({}, {"x509_common_name": [b"execution"]}) == "execution"
    for context in ({}, {"x509_common_name": [b"mallory"]}):
        with pytest.raises(errors.Unauthenticated):
            mtls.caller({MD_SERVICE_TOKEN: settings.service_token_of("execution")}, context)
