"""The OpenAPI document is what the gateway serves and enforces."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.openapi import ApiContract
from gateway.operations import OPERATIONS
from tests.support.stack import LiveStack

CONTRACT = ApiContract()
OPS_ROUTES = {"healthz", "readyz", "metrics", "openapiDocument", "openapiDocumentJson"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in CONTRACT.document["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                out.append((path, method, op))
    return out


def test_every_documented_operation_is_routed_and_every_route_documented() -> None:
    documented = {op["operationId"] for _, _, op in _operations()}
    routed = {op.operation_id for op in OPERATIONS}
    assert documented - OPS_ROUTES == routed


def test_runbook_routes_exist_with_their_exact_paths() -> None:
    paths = CONTRACT.document["paths"]
    for path, method in [
        ("/v2/conversations/sessions", "post"),
        ("/v2/conversations/sessions/{sessionId}", "get"),
        ("/v2/conversations/sessions/{sessionId}/turns", "post"),
        ("/v1/deployments", "post"),
        ("/v1/deployments/{deploymentId}", "get"),
        ("/v1/deployments/{deploymentId}/actions/stop", "post"),
        ("/v1/orders", "post"),
    ]:
        assert method in paths[path]


def test_every_operation_documents_its_problems() -> None:
    for path, method, op in _operations():
        if op["operationId"] in OPS_ROUTES:
            continue
        responses = op["responses"]
        for status in ("400", "401", "403", "500", "503"):
            assert status in responses, f"{method.upper()} {path} does not document {status}"
        assert op.get("x-required-role") in ("viewer", "trader", "risk-officer", "sre")
        if "requestBody" in op:
            content = CONTRACT._resolve(op["requestBody"])["content"]["application/json"]
            assert "example" in content, f"{method.upper()} {path} has no request example"


REGISTRY: Registry[Any] = Registry().with_resource(
    "urn:test", Resource.from_contents(CONTRACT.document, default_specification=DRAFT202012)
)


def _response_validator(op: dict[str, Any], status: int) -> Draft202012Validator | None:
    spec = op["responses"].get(str(status)) or op["responses"].get("default")
    assert spec is not None, f"{op['operationId']} answered an undocumented {status}"
    content = CONTRACT._resolve(spec).get("content", {})
    media = content.get("application/json") or content.get("application/problem+json")
    if media is None:
        return None
    schema = media["schema"]
    # Local refs resolve against the document registered as urn:test.
    if "$ref" in schema:
        schema = {"$ref": "urn:test" + schema["$ref"]}
    return Draft202012Validator(schema, registry=REGISTRY)


@pytest.mark.parametrize(
    "path,method,op",
    [(p, m, o) for p, m, o in _operations() if "requestBody" in o],
    ids=lambda v: v["operationId"] if isinstance(v, dict) else None,
)
def test_each_request_example_passes_validation_on_a_live_gateway(
    live_stack: LiveStack, path: str, method: str, op: dict[str, Any]
) -> None:
    content = CONTRACT._resolve(op["requestBody"])["content"]["application/json"]
    example = content["example"]
    url = path
    for param in [CONTRACT._resolve(p) for p in op.get("parameters", [])]:
        if param["in"] == "path":
            value = {"scope": "tenant", "scopeId": "examples"}.get(param["name"], "example_id")
            url = url.replace("{" + param["name"] + "}", value)
    headers = live_stack.headers(tenant="examples")
    headers["Idempotency-Key"] = f"example-{op['operationId']}"
    with live_stack.client(headers) as client:
        response = client.request(method.upper(), url, json=example)
    body = response.json()
    # The example is valid input: whatever the platform's state, it is never a contract error.
    assert response.status_code != 400 or body.get("code") not in ("VALIDATION_FAILED",), body
    assert response.status_code < 500 or response.status_code in (501, 503), body
    assert response.headers["x-request-id"] == body.get(
        "requestId", response.headers["x-request-id"]
    )
    validator = _response_validator(op, response.status_code)
    if validator is not None:
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, f"{op['operationId']} {response.status_code}: {errors}"
