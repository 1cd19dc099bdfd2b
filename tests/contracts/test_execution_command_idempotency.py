"""Idempotency of the execution command layer (DESIGN.md section 3).

Replays are byte-for-byte, another payload under the same key is 422, concurrent requests with
one key make exactly one order, and a crash between the side effect and the response replays
the result instead of executing twice - also with two execution processes on PostgreSQL.
Everything runs on the real platform (`execution_stack`), each test in its own tenant under a
real risk policy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gate4.execution.v1 import execution_pb2
from gate4.execution.v1.execution_pb2_grpc import ExecutionServiceStub
from services.runtime import errors
from tests.contracts.conftest import (
    POLICY_VERSION,
    TRADING_POLICY,
    audit_events,
    new_tenant,
    policy,
)
from tests.support import postgres
from tests.support.execution_stack import (
    ExecutionStack,
    deployment_request,
    execution_process,
    metadata,
    stub_for,
)
from tests.support.problems import assert_problem
from tests.support.trader import Trader, new_key

REPLAYED = "idempotent-replayed"


@pytest.fixture
def trader(execution_stack: ExecutionStack) -> Iterator[Trader]:
    """A tenant of the test's own, under the trading policy (version 1)."""
    trader = Trader.open(execution_stack, new_tenant("idem"))
    trader.put_policy(TRADING_POLICY)
    yield trader
    trader.close()


def _running(trader: Trader, account: str) -> str:
    dep_id = str(trader.deploy(account)["deploymentId"])
    trader.mark("BTC-USD", "100")
    return dep_id


def test_the_same_key_and_payload_replay_the_first_response_byte_for_byte(
    trader: Trader,
) -> None:
    dep_id = _running(trader, "acc-replay")
    order_key = new_key()
    body = trader.order_body(dep_id, "buy", "1")
    first = trader.post("/v1/orders", body, order_key)
    assert first.status_code == 201 and REPLAYED not in first.headers
    trader.mark("BTC-USD", "120")  # the world moves on; the replay does not
    replay = trader.post("/v1/orders", body, order_key, **{"X-Request-Id": "req-idem-replay-1"})
    assert replay.status_code == 201 and replay.headers[REPLAYED] == "true"
    assert replay.content == first.content
    assert len(trader.orders(dep_id)) == 1
    (event,) = audit_events(trader.client, {"command.replayed"}, requestId="req-idem-replay-1")
    assert event["orderId"] == first.json()["orderId"] and event["deploymentId"] == dep_id
    assert event["outcome"] == "REPLAYED" and event["policyVersion"] == POLICY_VERSION

    deploy_body = {
        "strategyId": "s",
        "accountId": "acc-replay-2",
        "instruments": ["BTC-USD"],
        "capitalAllocation": "10",
    }
    deploy_key = new_key()
    created = trader.post("/v1/deployments", deploy_body, deploy_key)
    # "mode" left out and "mode": "paper" are the same payload.
    again = trader.post("/v1/deployments", {**deploy_body, "mode": "paper"}, deploy_key)
    assert again.status_code == 201 and again.content == created.content
    assert again.headers[REPLAYED] == "true"

    stop_key = new_key()
    stopped = trader.stop(dep_id, flatten=True, key=stop_key)
    assert stopped.status_code == 200
    stopped_again = trader.stop(dep_id, flatten=True, key=stop_key)
    assert stopped_again.status_code == 200 and stopped_again.content == stopped.content
    # Without a key a second stop is a new command, and stopped is final.
    assert_problem(trader.stop(dep_id), 409, "STATE_CONFLICT")


def test_another_payload_under_the_same_key_is_422(trader: Trader) -> None:
    dep_id = _running(trader, "acc-reuse")
    order_key = new_key()
    assert trader.order(dep_id, "buy", "1", key=order_key).status_code == 201
    changed = trader.order(dep_id, "buy", "2", key=order_key)
    assert_problem(changed, 422, "IDEMPOTENCY_KEY_REUSED")
    assert len(trader.orders(dep_id)) == 1
    # Keys are scoped by route: the same key on another route is another command.
    body = {"strategyId": "s", "accountId": "a", "instruments": ["BTC-USD"]}
    other_route = trader.post("/v1/deployments", {**body, "capitalAllocation": "1"}, order_key)
    assert other_route.status_code == 201


def test_a_refusal_is_replayed_too(execution_stack: ExecutionStack, trader: Trader) -> None:
    dep_id = _running(trader, "acc-refusal-replay")
    trader.put_policy(policy(maxOrderNotional="50"), "small orders")  # 1 at 100 breaches it
    order_key = new_key()
    first = trader.order(dep_id, "buy", "1", key=order_key)
    assert_problem(first, 422, "RISK_LIMIT_BREACHED")
    # The limit is lifted again, but the key keeps the refusal it got.
    trader.put_policy(TRADING_POLICY, "limits restored")
    again = trader.order(dep_id, "buy", "1", key=order_key)
    problem = assert_problem(again, 422, "RISK_LIMIT_BREACHED")
    assert problem["outcome"] == "ORDER_NOTIONAL_LIMIT" and trader.orders(dep_id) == []
    # Over gRPC the replayed refusal carries the replay marker in its initial metadata.
    request = execution_pb2.SubmitOrderRequest(
        deployment_id=dep_id,
        instrument="BTC-USD",
        side="buy",
        type="market",
        quantity="1",
        idempotency_key=order_key,
    )
    with pytest.raises(grpc.RpcError) as exc:
        execution_stack.stub().SubmitOrder(request, metadata=metadata(trader.tenant))
    assert ("x-idempotent-replayed", "true") in tuple(exc.value.initial_metadata())  # type: ignore[attr-defined]
    assert errors.from_rpc_error(exc.value).error_code() == "RISK_LIMIT_BREACHED"


def test_twenty_concurrent_requests_with_one_key_make_exactly_one_order(trader: Trader) -> None:
    dep_id = _running(trader, "acc-concurrent")
    order_key = new_key()
    body = trader.order_body(dep_id, "buy", "1")
    responses: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def send() -> None:
        with httpx.Client(base_url=trader.client.base_url, headers=trader.client.headers) as c:
            start.wait()
            response = c.post("/v1/orders", json=body, headers={"Idempotency-Key": order_key})
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert created and len({r.content for r in created}) == 1
    assert sum(REPLAYED not in r.headers for r in created) <= 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert len(trader.orders(dep_id)) == 1
    assert trader.position(dep_id)["quantity"] == "1"


def test_a_crash_after_the_side_effect_replays_instead_of_executing_twice(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    dep_id = _running(trader, "acc-sigkill")
    order_key = new_key()
    execution_stack.restart_execution(GATE4_FAULT_CRASH_AFTER_COMMIT="SubmitOrder")
    try:
        crashed = trader.order(dep_id, "buy", "1", key=order_key)
        assert crashed.status_code in (502, 503, 504), crashed.text
        assert execution_stack.execution.proc is not None
        assert execution_stack.execution.proc.wait(10) == 137  # what SIGKILL looks like
    finally:
        execution_stack.restart_execution(GATE4_FAULT_CRASH_AFTER_COMMIT="")
    retry = trader.order(dep_id, "buy", "1", key=order_key)
    assert retry.status_code == 201 and retry.headers[REPLAYED] == "true"
    (order,) = trader.orders(dep_id)
    assert retry.json()["orderId"] == order["orderId"] and order["status"] == "filled"
    assert trader.position(dep_id)["quantity"] == "1"


# -- two execution processes on one PostgreSQL database --------------------------------------


@pytest.mark.postgres
def test_two_processes_on_postgresql_make_exactly_one_order_per_key(
    execution_stack: ExecutionStack,
    postgres_admin_url: str,
    tmp_path: Path,
) -> None:
    tenant = new_tenant("pg")
    md = metadata(tenant)
    officer = Trader.open(execution_stack, tenant)
    try:
        officer.put_policy(TRADING_POLICY)
    finally:
        officer.close()
    with postgres.fresh_database(postgres_admin_url) as url:
        env = {"GATE4_EXECUTION_DATABASE_URL": url}
        with (
            execution_process(tmp_path, "execution-a", execution_stack, env) as a,
            execution_process(tmp_path, "execution-b", execution_stack, env) as b,
        ):
            stub_a, stub_b = stub_for(a.port), stub_for(b.port)
            dep = stub_b.CreateDeployment(deployment_request("acc-pg"), metadata=md)
            stub_b.FeedMarks(
                execution_pb2.FeedMarksRequest(
                    marks=[execution_pb2.Mark(instrument="BTC-USD", price="100")]
                ),
                metadata=md,
            )

            def order(key: str) -> execution_pb2.SubmitOrderRequest:
                return execution_pb2.SubmitOrderRequest(
                    deployment_id=dep.deployment_id,
                    instrument="BTC-USD",
                    side="buy",
                    type="market",
                    quantity="1",
                    idempotency_key=key,
                )

            # 20 concurrent requests with one key, half to each process.
            shared = new_key("pg")
            results: list[object] = []
            start = threading.Barrier(20)

            def send(stub: ExecutionServiceStub) -> None:
                start.wait()
                try:
                    results.append(stub.SubmitOrder(order(shared), metadata=md, timeout=20))
                except grpc.RpcError as exc:
                    results.append(errors.from_rpc_error(exc).error_code())

            threads = [
                threading.Thread(target=send, args=(stub_a if i % 2 else stub_b,))
                for i in range(20)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            orders = [r for r in results if isinstance(r, execution_pb2.Order)]
            assert orders and {o.order_id for o in orders} == {orders[0].order_id}
            assert {r for r in results if isinstance(r, str)} <= {"IDEMPOTENCY_IN_PROGRESS"}

            # A commits the order, then dies before answering; B answers the retry.
            a.stop()
            a.env["GATE4_FAULT_CRASH_AFTER_COMMIT"] = "SubmitOrder"
            a.start()
            a.wait_ready(60)
            crashed_key = new_key("pg-crash")
            with pytest.raises(grpc.RpcError):
                stub_a.SubmitOrder(order(crashed_key), metadata=md, timeout=20)
            assert a.proc is not None and a.proc.wait(10) == 137
            replay, call = stub_b.SubmitOrder.with_call(order(crashed_key), metadata=md)
            assert ("x-idempotent-replayed", "true") in tuple(call.initial_metadata())
            listed = stub_b.ListOrders(
                execution_pb2.ListOrdersRequest(deployment_id=dep.deployment_id), metadata=md
            )
            assert sorted(o.order_id for o in listed.orders) == sorted(
                {orders[0].order_id, replay.order_id}
            )
            assert all(o.status == "filled" for o in listed.orders)
