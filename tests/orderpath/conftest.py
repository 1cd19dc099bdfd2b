"""Platforms and traffic for the order-path tests, all through the gateway's HTTP API.

`platform` is one real platform per storage backend (SQLite files under its var dir, then
one PostgreSQL database for every process), shared by every test of the package that
leaves the processes as it found them; each test trades in a tenant of its own. `replicas`
is two lanes of the platform on one PostgreSQL database (tests/support/replicas.py).
`open_platform` starts a platform of a test's own, for tests that kill processes.

`burst` sends requests all at once from one thread each; `audit_events` reads the audit
trail page by page; `execution_barrier` and `risk_barrier` wait until everything the
execution or the risk service recorded so far reached the audit trail (each ships its
outbox in order, so once a new event of its own arrived, every earlier one did).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import postgres
from tests.support.replicas import DatabaseStack, ReplicaStack, replica_stack
from tests.support.risk_rig import policy_doc
from tests.support.stack import start_stack, wait_for
from tests.support.trader import Trader, new_key

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = [SQLITE, pytest.param(POSTGRESQL, marks=pytest.mark.postgres)]

#: Every limit far away from what the tests trade, so only the limit under test can refuse.
ROOMY: dict[str, Any] = {
    "maxOrderNotional": "1000000",
    "maxOrderQuantity": "1000",
    "maxPositionNotional": "100000000",
    "maxOpenOrders": 10000,
    "orderRate": {"maxOrders": 10000, "windowSeconds": 60},
    "maxCapitalAllocation": "100000000",
    "dailyLossLimit": "100000000",
}


def roomy_policy(**limits: Any) -> dict[str, Any]:
    """The demo policy with every limit far away, then `limits` (see tests/support/risk_rig.py)."""
    return policy_doc(**{**ROOMY, **limits})


def new_tenant(prefix: str) -> str:
    return f"op-{prefix}-{uuid.uuid4().hex[:10]}"


# -- platforms ------------------------------------------------------------------------------------


@contextmanager
def open_platform(
    backend: str, var_dir: Path, admin_url: str, env: dict[str, str] | None = None
) -> Iterator[DatabaseStack]:
    """A platform on the backend (a fresh PostgreSQL database, dropped afterwards); always
    stopped when the block ends."""
    with ExitStack() as cleanup:
        url = ""
        if backend == POSTGRESQL:
            url = cleanup.enter_context(postgres.fresh_database(admin_url))
        extra = {**(env or {}), **({"GATE4_DATABASE_URL": url} if url else {})}
        live = start_stack(var_dir, extra)
        platform = DatabaseStack(live.stack, database_url=url)
        cleanup.callback(platform.stop)
        yield platform


def _admin_url(request: pytest.FixtureRequest, backend: str) -> str:
    if backend != POSTGRESQL:
        return ""
    admin: str = request.getfixturevalue("postgres_admin_url")
    return admin


@pytest.fixture(scope="package", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseStack]:
    """One platform per backend for the package's tests that do not kill processes."""
    backend: str = request.param
    var_dir = tmp_path_factory.mktemp(f"orderpath-{backend}")
    with open_platform(backend, var_dir, _admin_url(request, backend)) as live:
        yield live


@pytest.fixture(scope="package")
def replicas(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaStack]:
    """Two lanes (gateway, execution, risk each) on one fresh PostgreSQL database."""
    with replica_stack(tmp_path_factory.mktemp("replicas"), postgres_admin_url) as stack:
        yield stack


@contextmanager
def trading(platform: DatabaseStack, prefix: str) -> Iterator[Trader]:
    """A trader (holding every role) in a tenant of its own on the platform."""
    trader = Trader.open(platform, new_tenant(prefix))
    try:
        yield trader
    finally:
        trader.close()


# -- policies and deployments ---------------------------------------------------------------------


def put_policy(trader: Trader, doc: dict[str, Any], account: str = "") -> None:
    """Puts a policy for the tenant, or for one account of it, and reads it back."""
    body: dict[str, Any] = {"policy": doc, "reason": "order path tests"}
    params = {}
    if account:
        body["accountId"] = account
        params["accountId"] = account
    put = trader.client.put("/v1/risk/policy", json=body)
    assert put.status_code in (200, 201), put.text
    active = trader.client.get("/v1/risk/policy", params=params)
    assert active.status_code == 200, active.text
    assert active.json()["policy"]["limits"] == doc["limits"], active.text


def deploy(trader: Trader, account: str, instruments: list[str], capital: str = "100000") -> str:
    deployment = trader.deploy(account, capital=capital, instruments=instruments)
    assert deployment["state"] == "running", deployment
    return str(deployment["deploymentId"])


# -- traffic --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request of a burst: its key and body, and the response (None: no answer)."""

    key: str
    body: dict[str, Any]
    response: httpx.Response | None
    error: str = ""

    @property
    def status(self) -> int:
        return self.response.status_code if self.response is not None else 0

    def describe(self) -> str:
        if self.response is None:
            return f"{self.key}: no answer ({self.error})"
        return f"{self.key}: {self.status} {self.response.text[:300]}"


def burst(
    base_urls: list[str],
    headers: dict[str, str],
    bodies: list[dict[str, Any]],
    path: str = "/v1/orders",
    timeout: float = 30.0,
) -> list[Sent]:
    """POSTs every body at once, each under a new Idempotency-Key from a thread and an
    already open connection of its own, body i to base_urls[i % len(base_urls)]."""
    start = threading.Barrier(len(bodies))

    def send(index: int) -> Sent:
        key = new_key("op")
        body = bodies[index]
        url = base_urls[index % len(base_urls)]
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            client.get("/healthz")  # connected before the start, so the orders leave together
            start.wait(timeout=timeout)
            try:
                response = client.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError as exc:
                return Sent(key, body, None, repr(exc))
        return Sent(key, body, response)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, range(len(bodies))))


def assert_no_server_errors(sent: list[Sent]) -> None:
    failed = [s.describe() for s in sent if s.response is None or s.status >= 500]
    assert not failed, "\n".join(failed)


def refusal_outcomes(sent: list[Sent]) -> dict[str, int]:
    """How many 422 RISK_LIMIT_BREACHED answers carried each outcome."""
    counts: dict[str, int] = {}
    for s in sent:
        if s.status == 422:
            assert s.response is not None
            problem = s.response.json()
            assert problem["code"] == "RISK_LIMIT_BREACHED", s.describe()
            counts[problem["outcome"]] = counts.get(problem["outcome"], 0) + 1
    return counts


def signed_fills(order: dict[str, Any]) -> Decimal:
    """The order's fills as a signed quantity: positive for a buy."""
    filled = sum((Decimal(f["quantity"]) for f in order.get("fills", [])), Decimal(0))
    return filled if order["side"] == "buy" else -filled


def all_orders(client: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    """Every order of the deployment, page by page."""
    found: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(100):
        params = {"deploymentId": deployment_id, "limit": "100"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/orders", params=params)
        assert page.status_code == 200, page.text
        found.extend(page.json()["orders"])
        cursor = page.json().get("nextCursor", "")
        if not cursor:
            return found
    raise AssertionError("more than 100 pages of orders")


def position(client: httpx.Client, deployment_id: str, instrument: str) -> Decimal:
    read = client.get(f"/v1/deployments/{deployment_id}")
    assert read.status_code == 200, read.text
    for held in read.json().get("positions", []):
        if held["instrument"] == instrument:
            return Decimal(held["quantity"])
    return Decimal(0)


# -- the audit trail ------------------------------------------------------------------------------


def audit_events(client: httpx.Client, **query: str) -> list[dict[str, Any]]:
    """Every audit event of the tenant matching the query, oldest first, page by page."""
    found: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(100):
        params = {**query, "limit": "500"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/audit/events", params=params)
        assert page.status_code == 200, page.text
        found.extend(page.json()["events"])
        cursor = page.json().get("nextCursor", "")
        if not cursor:
            return found
    raise AssertionError("more than 100 pages of audit events")


def _wait_request(client: httpx.Client, request_id: str, timeout: float) -> None:
    wait_for(lambda: audit_events(client, requestId=request_id), timeout=timeout, interval=0.1)


def execution_barrier(trader: Trader, timeout: float = 15.0) -> None:
    """Waits until every event execution recorded so far is in the audit trail: a mark for
    an instrument nobody trades here records a `sandbox.marks` event behind them."""
    request_id = f"req-barrier-{uuid.uuid4().hex[:16]}"
    marks = {"marks": [{"instrument": "SOL-USD", "price": "150"}]}
    fed = trader.post("/v1/sandbox/marks", marks, **{"X-Request-Id": request_id})
    assert fed.status_code == 200, fed.text
    _wait_request(trader.client, request_id, timeout)


def risk_barrier(trader: Trader, timeout: float = 15.0) -> None:
    """Waits until every event risk recorded so far is in the audit trail: putting the
    tenant's active policy again (same limits, next version) records one behind them."""
    request_id = f"req-barrier-{uuid.uuid4().hex[:16]}"
    active = trader.client.get("/v1/risk/policy")
    assert active.status_code == 200, active.text
    put = trader.client.put(
        "/v1/risk/policy",
        json={"policy": active.json()["policy"], "reason": "audit barrier"},
        headers={"X-Request-Id": request_id},
    )
    assert put.status_code in (200, 201), put.text
    _wait_request(trader.client, request_id, timeout)
