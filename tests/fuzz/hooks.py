"""What schemathesis checks beyond its own checks, and the failures that are the tool's, not ours.

Loaded by schemathesis (`hooks` in tests/fuzz/schemathesis.toml). The two checks hold the
correlation contract: every response names its request in `X-Request-Id`, and every problem
document names the same request in `requestId`. KNOWN_ARTEFACTS lists each finding the tool
reports although the platform answers as its contract says, each with the reason; a finding
is dropped only when its operation, failure, status and problem `code` all match one entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, HookContext, Response
from schemathesis.core.failures import Failure

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Artefact:
    operation_id: str
    #: schemathesis's failure code, e.g. ST202 "schema-valid request rejected".
    failure: str
    status: int
    #: The problem `code` the response carries ("" for a response that is no problem).
    codes: frozenset[str]
    #: Further words the problem's `detail` must contain ("" for any).
    detail: str
    reason: str


def _artefacts(
    operations: tuple[str, ...], failure: str, status: int, codes: set[str], reason: str
) -> list[Artefact]:
    return [Artefact(op, failure, status, frozenset(codes), "", reason) for op in operations]


SCHEMA_VALID_REJECTED = "ST202"
RESPONSE_VIOLATES_SCHEMA = "ST108"
KEYED = ("createDeployment", "submitOrder", "stopDeployment", "createTurn")
GATED = ("createDeployment", "submitOrder")

KNOWN_ARTEFACTS: tuple[Artefact, ...] = (
    Artefact(
        "openapiDocument",
        RESPONSE_VIOLATES_SCHEMA,
        200,
        frozenset({""}),
        "",
        "the document is served as YAML text (`type: string`); schemathesis parses a YAML body "
        "into an object before it validates it",
    ),
    *_artefacts(
        GATED,
        SCHEMA_VALID_REJECTED,
        422,
        {"RISK_LIMIT_BREACHED"},
        "the pre-trade risk gate refuses schema-valid commands by policy, marks and exposure; "
        "a business refusal the schema cannot foresee",
    ),
    *_artefacts(
        GATED,
        SCHEMA_VALID_REJECTED,
        423,
        {"KILL_SWITCH_ENGAGED"},
        "the run engages kill switches itself (engageKillSwitch); commands in their scope are "
        "refused as the contract says",
    ),
    *_artefacts(
        KEYED,
        SCHEMA_VALID_REJECTED,
        422,
        {"IDEMPOTENCY_KEY_REUSED"},
        "the generator sends the document's example Idempotency-Key with other payloads; the "
        "contract answers a reused key with 422",
    ),
    Artefact(
        "putPolicy",
        SCHEMA_VALID_REJECTED,
        400,
        frozenset({"RISK_POLICY_INVALID"}),
        "",
        "risk validates the policy document against risk-policy.v1 and its coherence rules; "
        "the API schema accepts any object there on purpose (see RiskPolicyDocument)",
    ),
    Artefact(
        "queryAuditEvents",
        SCHEMA_VALID_REJECTED,
        400,
        frozenset({"VALIDATION_FAILED"}),
        "until: must be later than since",
        "`until` later than `since` relates two parameters, which JSON Schema cannot say; the "
        "parameter's description says it",
    ),
)


def _problem(response: Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _header(response: Response, name: str) -> str:
    values = response.headers.get(name.lower()) or []
    return values[0] if values else ""


def known_artefact(operation_id: str, failure: str, response: Response) -> Artefact | None:
    problem = _problem(response) or {}
    code = str(problem.get("code", "")) if response.status_code >= 400 else ""
    detail = str(problem.get("detail", ""))
    for artefact in KNOWN_ARTEFACTS:
        if (
            artefact.operation_id == operation_id
            and artefact.failure == failure
            and artefact.status == response.status_code
            and code in artefact.codes
            and artefact.detail in detail
        ):
            return artefact
    return None


@schemathesis.hook
def filter_failure(
    context: HookContext, failure: Failure, case: Case[Any], response: Response
) -> bool:
    """Keeps every failure but the known artefacts."""
    operation_id = str(case.operation.definition.raw.get("operationId", ""))
    return known_artefact(operation_id, failure.code, response) is None


@schemathesis.check
def request_id_on_every_response(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """Every response, errors included, carries the request's id in X-Request-Id."""
    request_id = _header(response, "X-Request-Id")
    if not REQUEST_ID_RE.match(request_id):
        raise AssertionError(f"X-Request-Id missing or malformed: {request_id!r}")


@schemathesis.check
def request_id_in_every_problem(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """Every error is a problem document whose requestId is the response's X-Request-Id."""
    if response.status_code < 400:
        return
    media = _header(response, "Content-Type").split(";")[0].strip()
    if media != PROBLEM_MEDIA_TYPE:
        raise AssertionError(f"a {response.status_code} answered as {media!r}, not problem+json")
    problem = _problem(response)
    if problem is None:
        raise AssertionError("the problem document is not a JSON object")
    if problem.get("requestId") != _header(response, "X-Request-Id"):
        raise AssertionError(
            f"requestId {problem.get('requestId')!r} is not the X-Request-Id "
            f"{_header(response, 'X-Request-Id')!r}"
        )
