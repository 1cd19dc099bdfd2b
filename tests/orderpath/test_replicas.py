"""The replica guarantees, on the topology `gate4 dev scale-out` starts (tests/support/replicas.py):
2 gateways, 2 risk, 2 execution, 1 audit, 1 conversation on one PostgreSQL database, every
caller balancing over every replica of a service.

One set of processes serves the whole module (started once, about 15 s); each test trades in
a tenant of its own. What each test holds across replicas:

- idempotency: one key sent to both gateways at once makes one order;
- the kill switch: engaged through one risk replica, every replica refuses, and the release
  is seen everywhere;
- the order rate: one limit for the account, however its orders spread over the replicas;
- positions: fills of both execution replicas on one position row all count;
- the audit chain: appends shipped concurrently by every replica's outbox form one valid
  chain, which an outside verifier recomputes;
- fail-over: with one risk and one execution replica SIGKILLed while orders flow, every order
  a client saw acknowledged exists exactly once. It kills processes, so it runs last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime import outcomes
from tests.orderpath.conftest import (
    Sent,
    all_orders,
    assert_no_server_errors,
    audit_events,
    burst,
    deploy,
    new_tenant,
    position,
    put_policy,
    refusal_outcomes,
    roomy_policy,
    signed_fills,
)
from tests.support import rpc
from tests.support.audit import GENESIS, recompute_hash
from tests.support.replicas import ReplicaStack, replica_stack
from tests.support.stack import wait_for
from tests.support.trader import Trader, new_key

pytestmark = pytest.mark.postgres

ORDERS = 30
#: A short command lease: a key whose execution replica was killed mid-command is taken over
#: by a retry within seconds, not the default 30 s.
ENV = {
    "GATE4_EXECUTION_COMMAND_LEASE_SECONDS": "3",
    "GATE4_EXECUTION_RECONCILE_INTERVAL_SECONDS": "0.5",
    # One account's decisions are serialised: on a busy CI machine the last of a burst may
    # wait longer than the default 2 s and fail closed. The tests are about decisions.
    "GATE4_RISK_TIMEOUT_SECONDS": "4",
}


@pytest.fixture(scope="module")
def replicas(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaStack]:
    """The scaled-out platform, once for the module (overrides the package's fixture)."""
    var_dir = tmp_path_factory.mktemp("replicas")
    with replica_stack(var_dir, postgres_admin_url, ENV) as stack:
        yield stack


@pytest.fixture
def traders(replicas: ReplicaStack) -> Iterator[list[Trader]]:
    """One user of a new tenant, on gateway 1 and on gateway 2 (one API key for both)."""
    tenant = new_tenant("replicas")
    headers = replicas.headers(tenant=tenant)
    lanes = [Trader(replicas.client(gateway, headers), tenant) for gateway in range(2)]
    try:
        yield lanes
    finally:
        for trader in lanes:
            trader.close()


def _trading(traders: list[Trader], account: str, **limits: Any) -> str:
    """A policy (roomy but for `limits`), a running deployment and a BTC-USD mark."""
    first, second = traders
    put_policy(first, roomy_policy(**limits))
    dep_id = deploy(second, account, ["BTC-USD"])
    first.mark("BTC-USD", "100")
    return dep_id


def _urls(traders: list[Trader]) -> list[str]:
    return [str(trader.client.base_url) for trader in traders]


def test_the_topology_is_what_gate4_dev_scale_out_runs(replicas: ReplicaStack) -> None:
    procs = replicas.processes()
    replicated = [f"{kind}-{i}" for kind in ("risk", "execution", "gateway") for i in (1, 2)]
    assert sorted(procs) == sorted(["audit", "conversation", *replicated])
    assert len({p.port for p in procs.values()}) == len(procs), "one port each"
    # Callers dial every replica; each replica listens on its own address.
    risk_list = procs["execution-1"].env["GATE4_RISK_ADDR"].split(",")
    assert risk_list == [f"127.0.0.1:{procs[f'risk-{i}'].port}" for i in (1, 2)]
    assert procs["risk-2"].env["GATE4_RISK_ADDR"] == f"127.0.0.1:{procs['risk-2'].port}"
    assert {p.env["GATE4_MIGRATE_ON_START"] for p in procs.values()} == {"false"}
    services = [p for p in procs.values() if p.component != "gateway"]
    metrics = {p.env[f"GATE4_{p.component.upper()}_METRICS_PORT"] for p in services}
    assert len(metrics) == len(services), "a metrics port each"


def test_each_gateway_serves_orders_the_other_reads(traders: list[Trader]) -> None:
    dep_id = _trading(traders, "acc-lanes")
    placed = [
        trader.post("/v1/orders", trader.order_body(dep_id, "buy", "1"), new_key("op"))
        for trader in traders
    ]
    assert [p.status_code for p in placed] == [201, 201], [p.text for p in placed]
    assert [p.json()["status"] for p in placed] == ["filled", "filled"]
    ids = sorted(p.json()["orderId"] for p in placed)
    for trader in traders:
        assert sorted(o["orderId"] for o in all_orders(trader.client, dep_id)) == ids
        assert position(trader.client, dep_id, "BTC-USD") == 2


def test_one_key_sent_to_both_gateways_at_once_makes_one_order(traders: list[Trader]) -> None:
    first, _ = traders
    dep_id = _trading(traders, "acc-idem")
    keys = [new_key("idem") for _ in range(10)]
    calls = [
        (url, key, first.order_body(dep_id, "buy", "1", clientOrderId=key))
        for key in keys
        for url in _urls(traders)
    ]

    answers = _race(dict(first.client.headers), calls)

    by_key: dict[str, set[str]] = {}
    for (_, key, _), answer in zip(calls, answers, strict=True):
        assert answer is not None, key
        if answer.status_code == 409:  # the twin was still running: retry later, same key
            assert answer.json()["code"] == "IDEMPOTENCY_IN_PROGRESS", answer.text
            continue
        assert answer.status_code == 201, answer.text
        by_key.setdefault(key, set()).add(answer.json()["orderId"])
    # Once the first finished, a retry on either gateway replays its order.
    for index, key in enumerate(keys):
        trader = traders[index % 2]
        replay = trader.post("/v1/orders", calls[2 * index][2], key)
        assert replay.status_code == 201, replay.text
        by_key.setdefault(key, set()).add(replay.json()["orderId"])
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    orders = all_orders(first.client, dep_id)
    assert sorted(o["clientOrderId"] for o in orders) == sorted(keys)
    assert {o["orderId"] for o in orders} == set().union(*by_key.values())
    # The key is the tenant's on every gateway: another body under it is refused on both.
    for trader in traders:
        other = trader.post("/v1/orders", first.order_body(dep_id, "sell", "2"), keys[0])
        assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")


def test_a_kill_switch_engaged_on_one_risk_replica_holds_on_every_replica(
    replicas: ReplicaStack, traders: list[Trader]
) -> None:
    first, second = traders
    dep_id = _trading(traders, "acc-halt")
    first.engage("deployment", dep_id, reason="replica test halt")

    # Each risk replica, asked directly, reads the switch from the shared database.
    for name in ("risk-1", "risk-2"):
        assert _switch_on(replicas, name, first.tenant, dep_id).engaged, name
    # 8 orders over 2 gateways, 2 executions and their round-robin over 2 risks: all refused.
    halted = _settled(traders, burst(_urls(traders), _headers(first), _buys(first, dep_id, 8)))
    assert [s.status for s in halted] == [423] * 8, [s.describe() for s in halted]
    assert {s.response.json()["code"] for s in halted if s.response is not None} == {
        outcomes.KILL_SWITCH_ENGAGED
    }

    released = second.post(
        f"/v1/risk/kill-switches/deployment/{dep_id}/actions/release",
        {"reason": "replica test release"},
    )
    assert released.status_code == 200, released.text
    for name in ("risk-1", "risk-2"):
        assert not _switch_on(replicas, name, first.tenant, dep_id).engaged, name
    resumed = _settled(traders, burst(_urls(traders), _headers(first), _buys(first, dep_id, 8)))
    assert [s.status for s in resumed] == [201] * 8, [s.describe() for s in resumed]


def test_the_order_rate_limit_is_one_limit_across_replicas(traders: list[Trader]) -> None:
    first, _ = traders
    limit = 6
    dep_id = _trading(traders, "acc-rate", orderRate={"maxOrders": limit, "windowSeconds": 3600})

    sent = _settled(traders, burst(_urls(traders), _headers(first), _buys(first, dep_id, 16)))

    assert_no_server_errors(sent)
    placed = [s for s in sent if s.status == 201]
    assert len(placed) == limit, [s.describe() for s in sent]
    assert refusal_outcomes(sent) == {outcomes.ORDER_RATE_LIMIT: len(sent) - limit}
    assert len(all_orders(first.client, dep_id)) == limit


def test_concurrent_fills_on_both_replicas_all_reach_the_position(
    traders: list[Trader],
) -> None:
    """ONE deployment, so every fill of both execution replicas lands on the same position
    row, where a lost update (read-modify-write) would show."""
    first = traders[0]
    dep_id = _trading(traders, "acc-busy")
    # Buys and sells of 1 and 2 units, so the position is a real signed sum of the fills.
    bodies = [
        first.order_body(dep_id, "sell" if i % 3 == 2 else "buy", str(1 + i % 2))
        for i in range(ORDERS)
    ]

    sent = _settled(traders, burst(_urls(traders), _headers(first), bodies))

    assert_no_server_errors(sent)
    orders = all_orders(first.client, dep_id)
    fills = sum((signed_fills(o) for o in orders), Decimal(0))
    for lane, trader in enumerate(traders, start=1):
        held = position(trader.client, dep_id, "BTC-USD")
        assert held == fills, f"gateway {lane}: position {held}, its orders filled {fills}"
    # Nothing was in the way, so every order was placed once and filled in full.
    assert {s.status for s in sent} == {201}, [s.describe() for s in sent if s.status != 201]
    assert len(orders) == ORDERS, f"{len(orders)} orders recorded for {ORDERS} keys"
    expected = sum(
        (Decimal(b["quantity"]) * (1 if b["side"] == "buy" else -1) for b in bodies), Decimal(0)
    )
    assert fills == expected, f"fills sum to {fills}, the orders asked for {expected}"


def test_the_audit_chain_holds_after_concurrent_appends_from_every_replica(
    replicas: ReplicaStack, traders: list[Trader]
) -> None:
    first = traders[0]
    dep_id = _trading(traders, "acc-chain")

    sent = _settled(traders, burst(_urls(traders), _headers(first), _buys(first, dep_id, 20)))

    assert {s.status for s in sent} == {201}, [s.describe() for s in sent if s.status != 201]
    placed = {s.response.json()["orderId"] for s in sent if s.response is not None}
    _wait_filled_in_audit(first.client, placed)
    for trader in traders:
        verified = trader.client.get("/v1/audit/chain/verify")
        assert verified.status_code == 200, verified.text
        assert verified.json()["valid"] is True, verified.json()
    # An outside verifier reaches the same chain from the stored events alone.
    events = _stored_events(replicas, first.tenant)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events), "an event appended twice"
    prev = GENESIS
    for evt in events:
        assert (evt.prev_hash, recompute_hash(evt)) == (prev, evt.hash), evt.sequence
        prev = evt.hash


# Kills risk-1 and execution-1 for the rest of the module: keep it the last test.
def test_killing_a_risk_and_an_execution_replica_under_load_loses_no_acknowledged_order(
    replicas: ReplicaStack, traders: list[Trader]
) -> None:
    first, second = traders
    dep_id = _trading(traders, "acc-failover")
    keys = [new_key("fo") for _ in range(48)]
    acked: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    urls = _urls(traders)
    headers = dict(first.client.headers)
    deadline = time.monotonic() + 60.0

    def place(index: int) -> None:
        """Sends the order until it is acknowledged, as a client would: after a 503, a 409
        in progress or no answer, again with the same key, on the other gateway."""
        key = keys[index]
        body = first.order_body(dep_id, "buy", "1", clientOrderId=key)
        attempt = index
        with httpx.Client(headers=headers, timeout=15.0) as client:
            while time.monotonic() < deadline:
                url = urls[attempt % 2]
                attempt += 1
                try:
                    answer = client.post(
                        f"{url}/v1/orders", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError:
                    continue
                if answer.is_success:
                    with lock:
                        acked[key] = answer.json()
                    return
                assert answer.status_code in (409, 503), answer.text
                time.sleep(0.1)  # a client's back-off, not a wait for time to pass

    with ThreadPoolExecutor(max_workers=6) as pool:
        running = [pool.submit(place, i) for i in range(len(keys))]
        # Kill once the load is flowing through every replica.
        wait_for(lambda: len(acked) >= 12, timeout=30, interval=0.02)
        replicas.kill("risk-1")
        replicas.kill("execution-1")
        for future in running:
            future.result()

    assert sorted(acked) == sorted(keys), f"{len(keys) - len(acked)} orders never acknowledged"
    orders = all_orders(second.client, dep_id)
    by_key: dict[str, list[str]] = {}
    for order in orders:
        by_key.setdefault(order["clientOrderId"], []).append(order["orderId"])
    for key, ack in acked.items():
        assert by_key.get(key) == [ack["orderId"]], f"{key}: acked {ack}, stored {by_key.get(key)}"
    assert len(orders) == len(keys), "an idempotency key produced a second order"
    # An order the killed replica recorded but never sent is settled by reconciliation as
    # rejected (VENUE_NOT_RECEIVED, never resent); only an order in flight there at the kill
    # can end so. Whatever each order's end, its acknowledgement told the client that end.
    stored = {o["orderId"]: o for o in orders}
    for key, ack in acked.items():
        final = stored[ack["orderId"]]
        assert (ack["status"], ack.get("outcome")) == (final["status"], final.get("outcome")), (
            f"{key}: acked {ack}, stored {final}"
        )
    unfilled = {o["orderId"]: o for o in orders if o["status"] != "filled"}
    for order in unfilled.values():
        assert (order["status"], order.get("outcome")) == ("rejected", "VENUE_NOT_RECEIVED"), order
    assert len(unfilled) <= 6, f"more unfilled orders than were in flight: {unfilled}"
    filled = {o["orderId"] for o in orders if o["status"] == "filled"}
    assert position(second.client, dep_id, "BTC-USD") == len(filled), f"unfilled: {unfilled}"
    _wait_filled_in_audit(second.client, filled)
    verified = second.client.get("/v1/audit/chain/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True, verified.json()


# -- helpers ------------------------------------------------------------------------------------


def _headers(trader: Trader) -> dict[str, str]:
    return dict(trader.client.headers)


def _settled(traders: list[Trader], sent: list[Sent], timeout: float = 30.0) -> list[Sent]:
    """The burst with each 503 (risk could not decide in time, failing closed: nothing was
    executed) sent again under its key until it gets a decision, as a client would. The
    account's decisions are serialised, so a loaded machine can take longer than risk's
    deadline for the last of a burst; the guarantees are about decisions, not latency."""
    deadline = time.monotonic() + timeout
    settled: list[Sent] = []
    for index, first in enumerate(sent):
        current = first
        while current.status == 503 and time.monotonic() < deadline:
            time.sleep(0.1)  # a client's back-off
            trader = traders[index % len(traders)]
            current = Sent(
                current.key, current.body, trader.post("/v1/orders", current.body, current.key)
            )
        settled.append(current)
    return settled


def _buys(trader: Trader, dep_id: str, count: int) -> list[dict[str, Any]]:
    return [trader.order_body(dep_id, "buy", "1") for _ in range(count)]


def _race(
    headers: dict[str, str], calls: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response | None]:
    """POSTs every (gateway URL, key, body) at once from a connected client each."""
    start = threading.Barrier(len(calls))

    def send(call: tuple[str, str, dict[str, Any]]) -> httpx.Response | None:
        url, key, body = call
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            client.get("/healthz")
            start.wait(timeout=30.0)
            try:
                return client.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                return None

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(send, calls))


def _switch_on(replicas: ReplicaStack, name: str, tenant: str, dep_id: str) -> risk_pb2.KillSwitch:
    with rpc.channel(replicas.process(name).port) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        ref = risk_pb2.KillSwitchRef(scope="deployment", scope_id=dep_id)
        switch: risk_pb2.KillSwitch = stub.GetKillSwitch(
            ref, metadata=rpc.metadata(tenant), timeout=5
        )
        return switch


def _wait_filled_in_audit(client: httpx.Client, order_ids: set[str]) -> None:
    """Until every order's `order.filled` event reached the audit trail."""

    def all_there() -> bool:
        filled = audit_events(client, type="order.filled")
        return order_ids <= {e.get("orderId", "") for e in filled}

    wait_for(all_there, timeout=30, interval=0.2)


def _stored_events(replicas: ReplicaStack, tenant: str) -> list[audit_pb2.AuditEvent]:
    """The tenant's chain as the audit service stores it, page by page."""
    events: list[audit_pb2.AuditEvent] = []
    with rpc.channel(replicas.process("audit").port) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        cursor = ""
        for _ in range(100):
            page = stub.Query(
                audit_pb2.QueryRequest(cursor=cursor, limit=500),
                metadata=rpc.metadata(tenant, caller="gateway"),
                timeout=10,
            )
            events.extend(page.events)
            cursor = page.next_cursor
            if not cursor:
                return events
    raise AssertionError("more than 100 pages of audit events")
