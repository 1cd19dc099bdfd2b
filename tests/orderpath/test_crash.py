"""Execution killed in the middle of a stream of keyed orders: one order, one decision per key.

A client sends 40 market orders, each under its own Idempotency-Key, from 8 threads, and
retries each key until it gets a definitive answer (any 2xx or 4xx but 409
IDEMPOTENCY_IN_PROGRESS; connection errors and 5xx are retried). Part-way, execution dies:

- frozen with SIGSTOP while orders are in flight, then SIGKILLed. Risk keeps answering the
  checks execution had already sent, so an order can be decided by risk and never recorded
  by execution; its key's retry decides it again. Until such a window was hit (risk approved
  an order execution does not know), this is repeated, at most three times;
- then restarted with GATE4_FAULT_CRASH_AFTER_VENUE=SubmitOrder, so it dies right after the
  venue acknowledged the next order, before recording the result (services/execution/faults.py);
  then restarted without it.

Afterwards every key has exactly one order (nothing lost, nothing doubled), filled once, or
rejected without a fill when reconciliation found it never reached the venue; the position
is the sum of the fills; and the audit trail holds exactly one risk.decision per order that
no `risk.decision.voided` event voids.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.orderpath.conftest import (
    BACKENDS,
    all_orders,
    audit_events,
    deploy,
    execution_barrier,
    open_platform,
    position,
    put_policy,
    risk_barrier,
    roomy_policy,
    signed_fills,
    trading,
)
from tests.support.execution_stack import FAST_ENV
from tests.support.replicas import DatabaseStack
from tests.support.stack import wait_for
from tests.support.trader import Trader, new_key

KEYS = 40
WORKERS = 8
#: Long enough that a busy order is never taken for a dead one, short enough for retries.
LEASE_SECONDS = "3"
#: Bounds: one key, the whole stream, and each wait of the operator.
KEY_DEADLINE = 90.0
STREAM_DEADLINE = 150.0
STEP_TIMEOUT = 60.0
FREEZE_SECONDS = 0.5
MAX_FREEZES = 3


@pytest.fixture(params=BACKENDS)
def crash_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseStack]:
    """A platform of the test's own (its execution gets killed), with short leases."""
    backend: str = request.param
    admin = request.getfixturevalue("postgres_admin_url") if backend == "postgresql" else ""
    env = {**FAST_ENV, "GATE4_EXECUTION_COMMAND_LEASE_SECONDS": LEASE_SECONDS}
    with open_platform(backend, tmp_path / "stack", admin, env) as live:
        yield live


@dataclass
class Keyed:
    key: str
    body: dict[str, Any]
    statuses: list[int] = field(default_factory=list)
    final: httpx.Response | None = None


@dataclass
class Stream:
    """Workers sending keyed orders until each has a definitive answer. While `gate` is
    clear nothing is sent (the operator is looking at the platform); `stop` ends early."""

    url: str
    headers: dict[str, str]
    orders: list[Keyed]
    gate: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    _todo: queue.Queue[Keyed] = field(default_factory=queue.Queue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _answered: int = 0

    def __post_init__(self) -> None:
        self.gate.set()
        for order in self.orders:
            self._todo.put(order)

    @property
    def answered(self) -> int:
        with self._lock:
            return self._answered

    def worker(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    order = self._todo.get_nowait()
                except queue.Empty:
                    return
                self._send(client, order)

    def _send(self, client: httpx.Client, order: Keyed) -> None:
        deadline = time.monotonic() + KEY_DEADLINE
        while time.monotonic() < deadline and not self.stop.is_set():
            if not self.gate.wait(timeout=1):
                continue
            try:
                response = client.post(
                    "/v1/orders", json=order.body, headers={"Idempotency-Key": order.key}
                )
            except httpx.HTTPError:
                order.statuses.append(0)
                time.sleep(0.1)
                continue
            order.statuses.append(response.status_code)
            busy = response.status_code == 409 and (
                response.json().get("code") == "IDEMPOTENCY_IN_PROGRESS"
            )
            if response.status_code >= 500 or busy:
                time.sleep(0.1)
                continue
            order.final = response
            with self._lock:
                self._answered += 1
            return

    def wait_answered(self, count: int) -> None:
        """Until `count` keys have their answer (or every key has)."""
        wait_for(
            lambda: self.answered >= min(count, len(self.orders)) or self.stop.is_set(),
            timeout=STEP_TIMEOUT,
        )


def _decided_not_recorded(trader: Trader, dep_id: str) -> set[str]:
    """Orders risk approved that execution never recorded: a crash landed in between."""
    approved = {
        e["orderId"]
        for e in audit_events(trader.client, deploymentId=dep_id, type="risk.decision")
        if e.get("orderId") and e["outcome"] == "APPROVED"
    }
    recorded = {o["orderId"] for o in all_orders(trader.client, dep_id)}
    return approved - recorded


def _freeze_and_kill(platform: DatabaseStack, stream: Stream, trader: Trader, dep_id: str) -> int:
    """SIGSTOP execution mid-stream, let risk finish what it was asked, SIGKILL, restart.
    Returns how many orders were caught between risk's decision and execution's record."""
    proc = platform.execution.proc
    assert proc is not None and proc.poll() is None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE_SECONDS)
        stream.gate.clear()
    finally:
        platform.execution.kill()  # SIGKILL ends a stopped process too
    try:
        platform.restart_execution()
        platform.wait_reachable()
        caught: set[str] = set()

        def probe() -> bool:
            caught.update(_decided_not_recorded(trader, dep_id))
            return bool(caught)

        with contextlib.suppress(AssertionError):  # risk's events ship asynchronously
            wait_for(probe, timeout=2, interval=0.2)
        return len(caught)
    finally:
        stream.gate.set()


def _crash_after_venue(platform: DatabaseStack, stream: Stream) -> int | None:
    """Arms the after-venue crash hook, lets the stream trip it, restarts without it.
    Returns the exit status (137 when the hook fired), None when no order reached it."""
    platform.restart_execution(GATE4_FAULT_CRASH_AFTER_VENUE="SubmitOrder")
    proc = platform.execution.proc
    assert proc is not None
    deadline = time.monotonic() + STEP_TIMEOUT
    while proc.poll() is None and stream.answered < len(stream.orders):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    status = proc.poll()
    platform.restart_execution(GATE4_FAULT_CRASH_AFTER_VENUE="")
    platform.wait_reachable()
    return status


def _live_decisions(
    decisions: list[dict[str, Any]], voided: set[str], order_ids: set[str]
) -> dict[str, list[dict[str, Any]]]:
    live: dict[str, list[dict[str, Any]]] = {order_id: [] for order_id in order_ids}
    for event in decisions:
        if event.get("orderId") in live and event["data"].get("decisionId") not in voided:
            live[event["orderId"]].append(event)
    return live


def test_a_killed_execution_leaves_one_order_and_one_decision_per_key(
    crash_platform: DatabaseStack,
) -> None:
    platform = crash_platform
    with trading(platform, "crash") as trader:
        put_policy(trader, roomy_policy())
        dep_id = deploy(trader, "acc-crash-stream", ["BTC-USD"])
        trader.mark("BTC-USD", "100")
        orders = [
            Keyed(new_key("crash"), trader.order_body(dep_id, "buy", "1")) for _ in range(KEYS)
        ]
        stream = Stream(platform.url, dict(trader.client.headers), orders)

        caught = 0
        freezes = 0
        hook_status: int | None = None
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            workers = [pool.submit(stream.worker) for _ in range(WORKERS)]
            try:
                for freezes in range(1, MAX_FREEZES + 1):
                    stream.wait_answered(6 * freezes)
                    caught += _freeze_and_kill(platform, stream, trader, dep_id)
                    if caught:
                        break
                stream.wait_answered(6 * (freezes + 1))
                hook_status = _crash_after_venue(platform, stream)
                for done in workers:
                    done.result(timeout=STREAM_DEADLINE)
            finally:
                stream.stop.set()
                stream.gate.set()
                proc = platform.execution.proc
                if proc is not None and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
        story = (
            f"{freezes} freeze(s), {caught} order(s) caught between decision and record, "
            f"after-venue hook exit {hook_status}"
        )
        print(story)  # shown with -s, and with the captured output of a failure

        lost = [(o.key, o.statuses) for o in orders if o.final is None]
        assert not lost, f"keys without a definitive answer ({story}): {lost}"
        answers = {o.key: o.final for o in orders if o.final is not None}
        wrong = {
            k: (r.status_code, r.text[:200]) for k, r in answers.items() if r.status_code != 201
        }
        assert not wrong, f"keys answered other than 201 ({story}): {wrong}"
        by_key = {k: r.json()["orderId"] for k, r in answers.items()}
        order_ids = set(by_key.values())
        assert len(order_ids) == KEYS, f"{len(order_ids)} distinct orders for {KEYS} keys"

        recorded = all_orders(trader.client, dep_id)
        extra = [o["orderId"] for o in recorded if o["orderId"] not in order_ids]
        assert not extra, f"orders no key answered with ({story}): {extra}"
        assert {o["orderId"] for o in recorded} == order_ids, f"orders missing ({story})"
        # A key's order is filled once, or (when the crash left it recorded but never sent)
        # rejected by reconciliation without a fill; never filled twice.
        fills = {o["orderId"]: (o["status"], o["outcome"], signed_fills(o)) for o in recorded}
        doubled = {i: f for i, f in fills.items() if f[2] != (1 if f[0] == "filled" else 0)}
        assert not doubled, f"orders with fills other than their own ({story}): {doubled}"
        total = sum((f[2] for f in fills.values()), Decimal(0))
        assert position(trader.client, dep_id, "BTC-USD") == total

        execution_barrier(trader)
        risk_barrier(trader)

        def settled() -> dict[str, list[dict[str, Any]]] | None:
            decisions = audit_events(trader.client, deploymentId=dep_id, type="risk.decision")
            voided = {
                str(e["data"].get("decisionId"))
                for e in audit_events(trader.client, type="risk.decision.voided")
            }
            live = _live_decisions(decisions, voided, order_ids)
            return None if any(len(found) != 1 for found in live.values()) else live

        try:
            live = wait_for(settled, timeout=10, interval=0.5)
        except AssertionError:
            decisions = audit_events(trader.client, deploymentId=dep_id, type="risk.decision")
            voided = {
                str(e["data"].get("decisionId"))
                for e in audit_events(trader.client, type="risk.decision.voided")
            }
            live = _live_decisions(decisions, voided, order_ids)
            wrong_count = {
                order_id: [(e["outcome"], e["data"].get("decisionId")) for e in found]
                for order_id, found in live.items()
                if len(found) != 1
            }
            raise AssertionError(
                f"orders without exactly one non-voided risk.decision ({story}): {wrong_count}"
            ) from None
        outcomes = {found[0]["outcome"] for found in live.values()}
        assert outcomes == {"APPROVED"}, outcomes
