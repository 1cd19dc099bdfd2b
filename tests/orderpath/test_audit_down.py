"""Audit down: the emergency brake still works, and nothing is lost or doubled.

Each service keeps its audit events in its outbox while the audit service is down. Past
GATE4_OUTBOX_MAX_BACKLOG (4 here) what adds risk is refused (`503`), but risk-reducing
commands and equity reports have a reserve beyond the bound (100 here):

- a stop with flatten completes and leaves the deployment flat;
- a manual engage halts its deployment (enforced, positions kept);
- equity reports still reach risk, so a drawdown trip fires and its flatten is enforced;
- a new order is still refused at the bound afterwards;
- the services log that they used the reserve.

Once audit is back every outbox drains, and every event arrives exactly once (one record
per event id, the ones the commands above made among them) in a chain that verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.runtime.storage.database import normalise_url
from tests.orderpath.conftest import (
    BACKENDS,
    all_orders,
    audit_events,
    deploy,
    execution_barrier,
    open_platform,
    put_policy,
    risk_barrier,
    roomy_policy,
    trading,
)
from tests.support.problems import assert_problem
from tests.support.replicas import DatabaseStack
from tests.support.stack import wait_for
from tests.support.trader import Trader, new_key

BOUND = 4
RESERVE = 100
#: New orders sent at most before one must be refused at the bound.
FILLERS = 10


@pytest.fixture(params=BACKENDS)
def audited_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseStack]:
    """A platform of the test's own with a small audit backlog bound (its audit gets killed)."""
    backend: str = request.param
    admin = request.getfixturevalue("postgres_admin_url") if backend == "postgresql" else ""
    env = {"GATE4_OUTBOX_MAX_BACKLOG": str(BOUND), "GATE4_OUTBOX_RESERVE": str(RESERVE)}
    with open_platform(backend, tmp_path / "stack", admin, env) as live:
        yield live


def unshipped(platform: DatabaseStack, service: str) -> int:
    """Events still in the service's outbox (pending or refused by audit)."""
    url = platform.settings().database_url_for(service)
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {service}_outbox")).scalar_one())
    finally:
        engine.dispose()


def drained(platform: DatabaseStack) -> None:
    """Waits until execution's and risk's outboxes have shipped every event."""
    wait_for(
        lambda: all(unshipped(platform, s) == 0 for s in ("execution", "risk")),
        timeout=60,
        interval=0.1,
    )


def log_text(platform: DatabaseStack, service: str) -> str:
    return (platform.var_dir / "logs" / f"{service}.log").read_text(errors="replace")


def test_the_brake_works_while_audit_is_down_and_every_event_arrives_once(
    audited_platform: DatabaseStack,
) -> None:
    platform = audited_platform
    with trading(platform, "audit-down") as trader:
        put_policy(
            trader,
            roomy_policy(
                killSwitch_maxDrawdownPct="10",
                killSwitch_confirmations=1,
                killSwitch_flattenOnTrip=True,
                killSwitch_scopes=["deployment"],
            ),
        )
        trader.mark("BTC-USD", "100")
        stopping = deploy(trader, "acc-stop", ["BTC-USD"])
        halted = deploy(trader, "acc-halt", ["BTC-USD"])
        # Small capital: a 20% fall of the mark is a drawdown above 10% of its equity.
        tripping = deploy(trader, "acc-trip", ["BTC-USD"], capital="350")
        filler = deploy(trader, "acc-fill", ["BTC-USD"])
        for dep_id in (stopping, halted, tripping):
            # With a bound of 4, an order sent before the last one's events shipped is
            # refused: the setup waits them out, the brake below is what is tested.
            drained(platform)
            trader.filled(dep_id, "buy", "2")
        execution_barrier(trader)
        risk_barrier(trader)

        platform.stack.processes["audit"].kill()
        try:
            _at_the_bound(trader, filler)

            stopped = trader.stop(stopping, flatten=True, key=new_key("stop"))
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["state"] == "stopped"
            assert trader.position(stopping)["quantity"] == "0"

            engaged = trader.client.post(
                f"/v1/risk/kill-switches/deployment/{halted}/actions/engage",
                json={"reason": "incident: audit down, halt"},
            )
            assert engaged.status_code == 200, engaged.text
            assert engaged.json()["enforcement"] == "enforced", engaged.json()
            assert trader.position(halted)["quantity"] == "2"

            # Equity reports reach risk: the fall trips the switch, which flattens.
            trader.mark("BTC-USD", "80")
            switch = wait_for(lambda: _enforced(trader, tripping), timeout=30, interval=0.2)
            assert (switch["trigger"], switch["flatten"]) == ("drawdown", True)
            assert trader.position(tripping)["quantity"] == "0"

            # New risk is still refused at the bound.
            assert_problem(trader.order(filler, "buy", "1"), 503, "DEPENDENCY_UNAVAILABLE")
        finally:
            platform.stack.restart("audit")

        for service in ("execution", "risk"):
            assert "outbox reserve" in log_text(platform, service), service
        drained(platform)

        events = audit_events(trader.client)
        ids = [e["eventId"] for e in events]
        assert len(ids) == len(set(ids)), "an event was recorded twice"
        types = {(e["type"], e.get("deploymentId", "")) for e in events}
        for expected in (
            ("deployment.stopped", stopping),
            ("killswitch.engaged", halted),
            ("killswitch.enforced", halted),
            ("killswitch.tripped", tripping),
            ("killswitch.enforced", tripping),
        ):
            assert expected in types, expected
        recorded = {e.get("orderId") for e in events if e["type"] == "order.filled"}
        for dep_id in (stopping, tripping, filler):
            for order in all_orders(trader.client, dep_id):
                assert order["orderId"] in recorded, order
        verified = trader.client.get("/v1/audit/chain/verify")
        assert verified.status_code == 200, verified.text
        assert verified.json()["valid"] is True, verified.json()


def _at_the_bound(trader: Trader, filler: str) -> None:
    """Sends new orders until one is refused because the audit backlog is full."""
    for _ in range(FILLERS):
        response = trader.order(filler, "buy", "1", headers={"X-Request-Id": _rid()})
        if response.status_code == 503:
            problem = assert_problem(response, 503, "DEPENDENCY_UNAVAILABLE")
            assert "audit backlog is full" in problem["detail"]
            return
        assert response.status_code == 201, response.text
    raise AssertionError(f"no order refused at the bound after {FILLERS} orders")


def _enforced(trader: Trader, dep_id: str) -> dict[str, Any] | None:
    switch = trader.kill_switch("deployment", dep_id)
    return switch if switch["engaged"] and switch["enforcement"] == "enforced" else None


def _rid() -> str:
    return f"req-audit-down-{uuid.uuid4().hex[:12]}"
