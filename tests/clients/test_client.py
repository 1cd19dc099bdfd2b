"""gate4_client without a network: requests, retries and errors through httpx.MockTransport.

Every behaviour test runs twice, on `Gate4Client` and on `AsyncGate4Client` (the `connect`
fixture), against the same scripted transport, and one test compares the two clients'
exchanges request by request: the generated sync client must behave as its async source.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gate4_client import (
    ROUTES,
    ApiError,
    AsyncGate4Client,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    Credentials,
    Gate4Client,
    Gate4ClientError,
    GatewayTimeoutError,
    IdempotencyKeyReusedError,
    KillSwitchEngagedError,
    NotFoundError,
    RetryPolicy,
    RiskRejectedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    config_from_env,
)

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "gateway" / "platform-api.openapi.yaml"
CREDS = Credentials(token="tok.secret.jwt", api_key="g4k_id_secret", tenant_id="acme", user_id="al")
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.02)

Responder = Callable[[httpx.Request], httpx.Response]


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"urn:gate4:problem:{code.lower()}",
        "title": code.title(),
        "status": status,
        "detail": f"{code} happened",
        "code": code,
        "requestId": "req_from_gateway",
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        **extra,
    }
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Recorder:
    """A MockTransport handler answering from a script and keeping every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh copy per request: a response is read through the client that received it
        # (sync or async stream), and scripted answers are shared by both clients' runs.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


class Driver:
    """A `Gate4Client` or an `AsyncGate4Client` behind the same synchronous calls, so that one
    test body proves both: an async method's coroutine runs to its end on the driver's loop."""

    def __init__(
        self, variant: str, recorder: Recorder, sleeps: list[float] | None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("credentials", CREDS)
        transport = httpx.MockTransport(recorder)
        record: Callable[[float], None] = sleeps.append if sleeps is not None else _no_sleep
        self.client: Gate4Client | AsyncGate4Client
        self._loop: asyncio.Runner | None = None
        if variant == "sync":
            self.client = Gate4Client("http://gw.test", transport=transport, sleep=record, **kwargs)
        else:

            async def sleep(seconds: float) -> None:
                record(seconds)

            self.client = AsyncGate4Client(
                "http://gw.test", transport=transport, sleep=sleep, **kwargs
            )
            self._loop = asyncio.Runner()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            return self._loop.run(result) if self._loop and inspect.iscoroutine(result) else result

        return call

    def close(self) -> None:
        if isinstance(self.client, Gate4Client):
            self.client.close()
        elif self._loop is not None:
            self._loop.run(self.client.aclose())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _no_sleep(_seconds: float) -> None:
    pass


Connect = Callable[..., Driver]


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """Makes drivers of one client variant: connect(recorder, sleeps=None, **client_kwargs)."""
    drivers: list[Driver] = []

    def make(recorder: Recorder, sleeps: list[float] | None = None, **kwargs: Any) -> Driver:
        drivers.append(Driver(request.param, recorder, sleeps, **kwargs))
        return drivers[-1]

    yield make
    for driver in drivers:
        driver.close()


def test_routes_are_exactly_the_contracts_operations() -> None:
    document = yaml.safe_load(OPENAPI.read_text())
    contract = {
        op["operationId"]: (method.upper(), path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict) and "operationId" in op
    }
    assert contract == ROUTES


def test_every_operation_has_a_method_on_both_clients_with_the_same_signature() -> None:
    sync_methods = {n for n in dir(Gate4Client) if not n.startswith("_")}
    async_methods = {n for n in dir(AsyncGate4Client) if not n.startswith("_")}
    assert sync_methods - {"close"} == async_methods - {"aclose"}
    for name in sync_methods - {"close", "from_env", "send"}:
        sync_sig = inspect.signature(getattr(Gate4Client, name))
        async_sig = inspect.signature(getattr(AsyncGate4Client, name))
        assert sync_sig.parameters.keys() == async_sig.parameters.keys(), name
        assert inspect.iscoroutinefunction(getattr(AsyncGate4Client, name)), name
    # One method per operation: the snake_case of every operationId (two aliases aside).
    expected = {"".join("_" + c.lower() if c.isupper() else c for c in op) for op in ROUTES} - {
        "openapi_document",
        "openapi_document_json",
    }
    assert expected | {"openapi_document"} <= sync_methods


def test_a_command_carries_credentials_correlation_channel_and_a_compact_body(
    connect: Connect,
) -> None:
    rec = Recorder(httpx.Response(201, json={"sessionId": "ses_1"}))
    with connect(rec, channel="openclaw") as gate4:
        session = gate4.create_session(
            topic="incident-triage",
            metadata={"notificationsOptIn": True},
            request_id="req_abc12345",
        )
    assert session["sessionId"] == "ses_1"
    (request,) = rec.requests
    assert (request.method, str(request.url)) == (
        "POST",
        "http://gw.test/v2/conversations/sessions",
    )
    assert request.headers["Authorization"] == "Bearer tok.secret.jwt"
    assert request.headers["X-API-Key"] == "g4k_id_secret"
    assert request.headers["X-Tenant-Id"] == "acme"
    assert request.headers["X-User-Id"] == "al"
    assert request.headers["X-Request-Id"] == "req_abc12345"
    assert request.headers["X-Channel"] == "openclaw"
    assert request.headers["Content-Type"] == "application/json"
    assert "Idempotency-Key" not in request.headers  # not part of createSession's contract
    assert request.content == (
        b'{"channel":"openclaw","topic":"incident-triage","metadata":{"notificationsOptIn":true}}'
    )


def test_operational_routes_need_no_credentials(connect: Connect) -> None:
    rec = Recorder(httpx.Response(503, json={"status": "unavailable", "services": {}}))
    gate4 = connect(rec, credentials=None)
    assert gate4.readyz()["status"] == "unavailable"  # readyz's 503 is its report, not an error
    assert "Authorization" not in rec.requests[0].headers
    with pytest.raises(ConfigurationError, match="GATE4_TOKEN"):
        gate4.get_session("ses_1")


def test_path_and_query_parameters_are_encoded(connect: Connect) -> None:
    rec = Recorder(httpx.Response(200, json={"events": []}))
    with connect(rec) as gate4:
        gate4.query_audit_events({"requestId": "req:1/2", "outcome": "APPROVED"}, limit=5)
        gate4.get_kill_switch("deployment", "dep 1/x")
        gate4.list_kill_switches(engaged_only=True)
    first, second, third = rec.requests
    assert first.url.params["requestId"] == "req:1/2"
    assert first.url.params["limit"] == "5"
    assert second.url.raw_path == b"/v1/risk/kill-switches/deployment/dep%201%2Fx"
    assert third.url.params["engagedOnly"] == "true"


@pytest.mark.parametrize(
    ("call", "operation"),
    [
        (lambda g: g.create_turn("ses_1", "status"), "createTurn"),
        (lambda g: g.stop_deployment("dep_1"), "stopDeployment"),
        (
            lambda g: g.create_deployment(
                strategy_id="s", account_id="a", instruments=["BTC-USD"], capital_allocation="1"
            ),
            "createDeployment",
        ),
        (
            lambda g: g.submit_order(
                deployment_id="d", instrument="BTC-USD", side="buy", type="market", quantity="1"
            ),
            "submitOrder",
        ),
    ],
)
def test_keyed_commands_always_send_an_idempotency_key(
    connect: Connect, call: Callable[[Driver], Any], operation: str
) -> None:
    rec = Recorder(httpx.Response(201, json={}))
    with connect(rec) as gate4:
        call(gate4)
    key = rec.requests[0].headers["Idempotency-Key"]
    assert 8 <= len(key) <= 255
    method, template = ROUTES[operation]
    assert rec.requests[0].method == method
    assert re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), rec.requests[0].url.path)


def test_each_command_gets_its_own_key_and_keeps_it_across_retries(connect: Connect) -> None:
    ok = httpx.Response(200, json={})
    rec = Recorder(problem(504, "DEADLINE_EXCEEDED"), ok, ok, ok)
    with connect(rec) as gate4:
        gate4.stop_deployment("dep_1")  # 504: outcome unknown, resent because it is keyed
        gate4.stop_deployment("dep_1")
        gate4.stop_deployment("dep_1", idempotency_key="caller-key-0001")
    first, resent, second, own = (r.headers["Idempotency-Key"] for r in rec.requests)
    assert first == resent != second
    assert str(uuid.UUID(first)) == first
    assert own == "caller-key-0001"


def test_a_retry_resends_the_same_request_id_key_and_body_after_backoff(connect: Connect) -> None:
    rec = Recorder(
        problem(503, "RISK_UNAVAILABLE"),
        httpx.ConnectError("refused"),
        problem(409, "IDEMPOTENCY_IN_PROGRESS"),
        httpx.Response(201, json={"orderId": "ord_1"}),
    )
    sleeps: list[float] = []
    with connect(rec, sleeps) as gate4:
        order = gate4.submit_order(
            deployment_id="dep_1",
            instrument="BTC-USD",
            side="buy",
            type="market",
            quantity="0.5",
            idempotency_key="key-00000001",
            request_id="req_retry001",
        )
    assert order["orderId"] == "ord_1"
    assert len(rec.requests) == 4
    assert {r.headers["Idempotency-Key"] for r in rec.requests} == {"key-00000001"}
    assert {r.headers["X-Request-Id"] for r in rec.requests} == {"req_retry001"}
    assert len({r.content for r in rec.requests}) == 1
    assert len(sleeps) == 3 and all(0 < s <= FAST.backoff_max for s in sleeps)


def test_retry_after_is_honoured(connect: Connect) -> None:
    limited = problem(429, "RATE_LIMITED")
    limited.headers["Retry-After"] = "2"
    rec = Recorder(limited, httpx.Response(200, json={"deployments": []}))
    sleeps: list[float] = []
    with connect(rec, sleeps) as gate4:
        gate4.list_deployments()
    assert sleeps == [2.0]


def test_an_unkeyed_command_is_not_resent_when_its_outcome_is_unknown(connect: Connect) -> None:
    # createSession has no Idempotency-Key: after a 504 it may have happened, so no retry...
    rec = Recorder(problem(504, "DEADLINE_EXCEEDED"))
    with connect(rec) as gate4, pytest.raises(GatewayTimeoutError) as err:
        gate4.create_session(topic="t")
    assert len(rec.requests) == 1
    assert err.value.code == "DEADLINE_EXCEEDED"
    # ...but a connection that was never made did nothing, and a GET is always safe.
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(201, json={"sessionId": "s"}))
    with connect(rec) as gate4:
        gate4.create_session(topic="t")
    assert len(rec.requests) == 2
    rec = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json={"sessionId": "s"}))
    with connect(rec) as gate4:
        gate4.get_session("s")
    assert len(rec.requests) == 2


def test_state_conflicts_and_refusals_are_not_retried(connect: Connect) -> None:
    for answer in (problem(409, "STATE_CONFLICT"), problem(423, "KILL_SWITCH_ENGAGED")):
        rec = Recorder(answer)
        with connect(rec) as gate4, pytest.raises(ApiError):
            gate4.stop_deployment("dep_1")
        assert len(rec.requests) == 1


def test_retries_are_bounded_and_end_in_the_last_error(connect: Connect) -> None:
    rec = Recorder(problem(503, "DEPENDENCY_UNAVAILABLE"))
    with connect(rec) as gate4, pytest.raises(ServiceUnavailableError):
        gate4.get_deployment("dep_1")
    assert len(rec.requests) == FAST.max_retries + 1


def test_no_answer_raises_a_transport_error_with_the_request_id(connect: Connect) -> None:
    rec = Recorder(httpx.ConnectError("[Errno 111] Connection refused"))
    retry = RetryPolicy(max_retries=1, backoff_base=0.01)
    with connect(rec, retry=retry) as gate4, pytest.raises(TransportError) as err:
        gate4.get_order("ord_1", request_id="req_noanswer1")
    assert err.value.request_id == "req_noanswer1"
    assert "cannot connect to the Platform API at http://gw.test" in str(err.value)
    assert "req_noanswer1" in str(err.value)


@pytest.mark.parametrize(
    ("answer", "cls", "code", "outcome"),
    [
        (problem(401, "UNAUTHENTICATED"), AuthenticationError, "UNAUTHENTICATED", ""),
        (problem(404, "NOT_FOUND"), NotFoundError, "NOT_FOUND", ""),
        (problem(409, "STATE_CONFLICT"), ConflictError, "STATE_CONFLICT", ""),
        (
            problem(422, "RISK_LIMIT_BREACHED", outcome="ORDER_NOTIONAL_LIMIT"),
            RiskRejectedError,
            "RISK_LIMIT_BREACHED",
            "ORDER_NOTIONAL_LIMIT",
        ),
        (
            problem(422, "IDEMPOTENCY_KEY_REUSED"),
            IdempotencyKeyReusedError,
            "IDEMPOTENCY_KEY_REUSED",
            "",
        ),
        (
            problem(423, "KILL_SWITCH_ENGAGED", outcome="KILL_SWITCH_ENGAGED"),
            KillSwitchEngagedError,
            "KILL_SWITCH_ENGAGED",
            "KILL_SWITCH_ENGAGED",
        ),
        (problem(500, "INTERNAL"), ServerError, "INTERNAL", ""),
    ],
)
def test_problems_become_typed_errors(
    connect: Connect, answer: httpx.Response, cls: type[ApiError], code: str, outcome: str
) -> None:
    rec = Recorder(answer)
    with connect(rec) as gate4, pytest.raises(cls) as err:
        gate4.submit_order(
            deployment_id="d",
            instrument="BTC-USD",
            side="buy",
            type="market",
            quantity="1",
            idempotency_key="key-typed-1",
        )
    exc = err.value
    assert type(exc) is cls
    assert isinstance(exc, Gate4ClientError)
    assert (exc.status, exc.code, exc.outcome) == (answer.status_code, code, outcome)
    assert exc.request_id == "req_from_gateway"
    assert exc.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert exc.idempotency_key == "key-typed-1"
    assert exc.problem["code"] == code
    assert "requestId req_from_gateway" in str(exc)


def test_an_error_without_a_problem_document_still_has_a_code_and_request_id(
    connect: Connect,
) -> None:
    rec = Recorder(
        httpx.Response(
            502, text="<html>bad gateway</html>", headers={"X-Request-Id": "req_hdr0001"}
        )
    )
    with connect(rec, retry=RetryPolicy(max_retries=0)) as gate4, pytest.raises(ServerError) as err:
        gate4.get_order("ord_1")
    assert (err.value.code, err.value.request_id, err.value.status) == (
        "HTTP_502",
        "req_hdr0001",
        502,
    )


def test_secrets_stay_out_of_reprs_and_errors(connect: Connect) -> None:
    rec = Recorder(problem(401, "UNAUTHENTICATED"))
    with connect(rec) as gate4, pytest.raises(AuthenticationError) as err:
        gate4.verify_audit_chain()
    for text in (repr(CREDS), repr(gate4.config), str(err.value), repr(err.value.problem)):
        assert "tok.secret.jwt" not in text
        assert "g4k_id_secret" not in text


def test_configuration_from_the_environment() -> None:
    env = {
        "GATE4_API_BASE": "http://gw.example:9000",
        "GATE4_TOKEN": "t",
        "GATE4_API_KEY": "k",
        "GATE4_TENANT_ID": "acme",
        "GATE4_USER_ID": "al",
        "GATE4_CHANNEL": "openclaw",
    }
    config = config_from_env(env)
    assert config.base_url == "http://gw.example:9000"
    assert config.credentials == Credentials(
        token="t", api_key="k", tenant_id="acme", user_id="al", api_base="http://gw.example:9000"
    )
    assert config.channel == "openclaw"
    assert config_from_env({}).credentials is None
    assert config_from_env(env, channel="cli").channel == "cli"
    gate4 = Gate4Client.from_env(env)
    assert gate4.config.base_url == "http://gw.example:9000"
    gate4.close()


#: Scripts for the side-by-side run: a call, and the answers the gateway gives it in turn.
SCENARIOS: list[tuple[Callable[[Driver], Any], tuple[httpx.Response | Exception, ...]]] = [
    (
        lambda g: g.submit_order(
            deployment_id="d", instrument="BTC-USD", side="buy", type="market", quantity="1"
        ),
        (
            problem(503, "RISK_UNAVAILABLE"),
            httpx.ConnectError("refused"),
            problem(504, "DEADLINE_EXCEEDED"),
            httpx.Response(201, json={"orderId": "ord_1"}),
        ),
    ),
    (lambda g: g.create_session(topic="t"), (problem(504, "DEADLINE_EXCEEDED"),)),
    (
        lambda g: g.stop_deployment("dep_1", reason="r"),
        (
            problem(409, "IDEMPOTENCY_IN_PROGRESS"),
            problem(423, "KILL_SWITCH_ENGAGED", outcome="KILL_SWITCH_ENGAGED"),
        ),
    ),
    (
        lambda g: g.list_deployments(limit=2),
        (
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(502, text="bad gateway"),
            httpx.Response(200, json={"deployments": []}),
        ),
    ),
    (lambda g: g.create_turn("ses_1", "hi"), (problem(422, "IDEMPOTENCY_KEY_REUSED"),)),
    (lambda g: g.get_order("ord_1"), (httpx.ReadTimeout("slow"),)),
    (lambda g: g.get_session("ses_1"), (problem(404, "NOT_FOUND"),)),
    (lambda g: g.metrics(), (httpx.Response(200, text="gate4_up 1"),)),
]


def exchanges(variant: str) -> list[str]:
    """All that is observable of SCENARIOS on one client: every request with its headers and
    body, every wait, and the result or the error with all its attributes."""
    state = random.getstate()
    random.seed(4)  # the same backoff jitter for both clients
    ids: dict[str, str] = {}  # fresh request ids and keys, numbered by first appearance
    seen = []
    try:
        for call, answers in SCENARIOS:
            rec, sleeps = Recorder(*answers), list[float]()
            with Driver(variant, rec, sleeps) as gate4:
                try:
                    outcome: Any = ("result", call(gate4))
                except Gate4ClientError as exc:
                    outcome = (type(exc).__name__, str(exc), sorted(vars(exc).items()))
            sent = [
                (r.method, str(r.url), sorted(r.headers.items()), r.content) for r in rec.requests
            ]
            text = repr((sent, sleeps, outcome))
            for request in rec.requests:
                for name in ("X-Request-Id", "Idempotency-Key"):
                    value = request.headers.get(name)
                    if value:
                        text = text.replace(value, ids.setdefault(value, f"<{name} {len(ids)}>"))
            seen.append(text)
    finally:
        random.setstate(state)
    return seen


def test_both_clients_make_the_same_exchanges() -> None:
    sync, async_ = exchanges("sync"), exchanges("async")
    assert len(sync) == len(SCENARIOS)
    for scenario, (ours, theirs) in enumerate(zip(sync, async_, strict=True)):
        assert ours == theirs, f"scenario {scenario}"
