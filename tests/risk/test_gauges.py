"""Risk's gauges: what a scrape reads from the database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import drawdown, gauges, killswitch
from tests.risk.conftest import T0, RiskStore
from tests.risk.test_drawdown import report


def test_engaged_switches_are_one_sample_each_until_released(store: RiskStore) -> None:
    def engage(conn: Connection, scope_id: str) -> tuple[risk_pb2.KillSwitch, bool]:
        return killswitch.engage(
            conn,
            store.outbox,
            "t1",
            "deployment",
            scope_id,
            trigger="manual",
            reason="test",
            by="olga",
            evidence=risk_pb2.BreachEvidence(),
            flatten=False,
            at=T0,
        )

    store.run(lambda c: engage(c, "dep-1"))
    store.run(lambda c: engage(c, "dep-2"))
    samples = store.db.read_sync(gauges.engaged_switches)
    assert sorted(samples) == [
        (("t1", "deployment", "dep-1"), 1.0),
        (("t1", "deployment", "dep-2"), 1.0),
    ]


def test_drawdown_and_its_limit_per_deployment(store: RiskStore) -> None:
    store.put_policy(killSwitch_maxDrawdownPct="10", killSwitch_scopes=["deployment"])
    box, kept = store.outbox, store.books
    store.run(lambda c: drawdown.record(c, box, kept, "t1", report("10000", T0)))
    store.run(
        lambda c: drawdown.record(c, box, kept, "t1", report("9500", T0 + timedelta(seconds=1)))
    )
    ((labels, pct),) = store.db.read_sync(gauges.deployment_drawdowns)
    assert labels[0] == "t1" and pct == 5.0
    ((_, limit),) = store.db.read_sync(gauges.deployment_drawdown_limits)
    assert limit == 10.0
