"""Risk hung, not dead (its process paused with SIGSTOP): every answer is still the truth.

Every hop passes on what is left of its caller's deadline, so the innermost hop gives up
first and its error is what the client sees:

- a new order and a new deployment are `503 RISK_UNAVAILABLE` with `Retry-After` (not a
  504 from the gateway's own deadline): nothing was executed, and nothing is later, since
  risk refuses the checks that waited in its socket once it resumes (their deadline passed);
- a stop with flatten reduces risk, so it proceeds without risk's answer: `200` if it
  finished within the request, else `202` with the deployment `stopping` and where to poll.
  It ends `stopped` and flat, and its key then replays that final answer;
- nothing opens: the deployment's orders are the one before the outage and the flatten.

The risk process is always resumed, whatever happens in the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.orderpath.conftest import (
    BACKENDS,
    all_orders,
    audit_events,
    deploy,
    open_platform,
    put_policy,
    risk_barrier,
    roomy_policy,
    trading,
)
from tests.support.faults import paused
from tests.support.problems import assert_problem
from tests.support.replicas import DatabaseStack
from tests.support.stack import wait_for
from tests.support.trader import Trader, new_key


@pytest.fixture(params=BACKENDS)
def hung_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseStack]:
    """A platform of the test's own: its risk process gets paused."""
    backend: str = request.param
    admin = request.getfixturevalue("postgres_admin_url") if backend == "postgresql" else ""
    with open_platform(backend, tmp_path / "stack", admin) as live:
        yield live


def _request_id(kind: str) -> str:
    return f"req-hung-{kind}-{uuid.uuid4().hex[:12]}"


def test_a_hung_risk_refuses_new_risk_in_time_and_the_stop_still_ends_flat(
    hung_platform: DatabaseStack,
) -> None:
    with trading(hung_platform, "hung") as trader:
        put_policy(trader, roomy_policy())
        trader.mark("BTC-USD", "100")
        dep_id = deploy(trader, "acc-hung", ["BTC-USD"])
        bought = trader.filled(dep_id, "buy", "2")
        order_rid, create_rid = _request_id("order"), _request_id("create")
        stop_key = new_key("stop")

        with paused(hung_platform.risk):
            order = trader.order(dep_id, "buy", "1", headers={"X-Request-Id": order_rid})
            problem = assert_problem(order, 503, "RISK_UNAVAILABLE")
            assert "nothing was executed" in problem["detail"]
            assert order.headers["Retry-After"].isdigit()

            created = trader.post(
                "/v1/deployments",
                {
                    "strategyId": "trend-1",
                    "accountId": "acc-hung",
                    "instruments": ["BTC-USD"],
                    "capitalAllocation": "1000",
                },
                new_key("dep"),
                **{"X-Request-Id": create_rid},
            )
            assert_problem(created, 503, "RISK_UNAVAILABLE")
            assert created.headers["Retry-After"].isdigit()

            stopped = trader.stop(dep_id, flatten=True, key=stop_key)
            assert stopped.status_code in (200, 202), stopped.text
            if stopped.status_code == 202:
                assert stopped.json()["state"] == "stopping"
                assert stopped.headers["Location"] == f"/v1/deployments/{dep_id}"
            final = _final_state(trader, dep_id)
            # The same key now answers with the final outcome, still while risk hangs.
            replay = trader.stop(dep_id, flatten=True, key=stop_key)

        assert final["state"] == "stopped", final
        assert [p["quantity"] for p in final["positions"]] == ["0"]
        assert replay.status_code == 200, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["state"] == "stopped"

        # Nothing opened: the buy before the outage and the flatten, sent without risk's
        # answer (recorded as such); the refused deployment does not exist.
        orders = all_orders(trader.client, dep_id)
        assert sorted((o["side"], o["status"]) for o in orders) == [
            ("buy", "filled"),
            ("sell", "filled"),
        ]
        (flatten,) = [o for o in orders if o["orderId"] != bought["orderId"]]
        assert flatten["reduceOnly"] is True and flatten["outcome"] == "RISK_UNAVAILABLE"
        listed = trader.client.get("/v1/deployments").json()["deployments"]
        assert [d["deploymentId"] for d in listed] == [dep_id]

        # Once risk resumed, the checks that waited in its socket decided nothing: the refused
        # order and deployment have execution's refusal and no risk decision.
        risk_barrier(trader)
        refusals = ((order_rid, "order.rejected"), (create_rid, "deployment.rejected"))
        for request_id, refusal in refusals:
            events = audit_events(trader.client, requestId=request_id)
            assert [(e["type"], e["outcome"]) for e in events] == [(refusal, "RISK_UNAVAILABLE")], (
                events
            )


def _final_state(trader: Trader, dep_id: str) -> dict[str, Any]:
    """The deployment once its stop is over (reads work while risk hangs)."""

    def done() -> dict[str, Any] | None:
        deployment = trader.deployment(dep_id)
        return deployment if deployment["state"] != "stopping" else None

    return wait_for(done, timeout=60, interval=0.25)
