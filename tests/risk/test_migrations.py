"""Risk's schema revisions apply, downgrade and re-apply on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from services.risk.app import RiskService
from services.runtime.storage import Database
from services.runtime.storage.migrations import current_revision, migrate


def test_risk_migrations_upgrade_downgrade_and_upgrade_again(database_url: str) -> None:
    from alembic import command

    from services.runtime.storage.migrations import alembic_config

    db = Database(database_url, name="risk")
    try:
        migrate(db, RiskService.migrations, "risk")
        assert current_revision(db, "risk") == "risk0005"

        def tables(conn: sa.Connection) -> set[str]:
            return set(sa.inspect(conn).get_table_names())

        assert {"risk_equity", "risk_orders", "risk_positions", "risk_stamps"} <= (
            db.read_sync(tables)
        )
        assert "risk_order_rate" not in db.read_sync(tables)
        cfg = alembic_config(RiskService.migrations, "risk")
        with db.writer_engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "risk0001")
            conn.commit()
        assert current_revision(db, "risk") == "risk0001"
        assert not {"risk_equity", "risk_stamps"} & db.read_sync(tables)
        migrate(db, RiskService.migrations, "risk")
        assert current_revision(db, "risk") == "risk0005"
    finally:
        db.close()


def test_the_order_rate_window_carries_over_into_the_order_rows(database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from services.risk import ratelimit, reservations

    db = Database(database_url, name="risk")
    try:
        migrate(db, RiskService.migrations, "risk", target="risk0002")
        at = datetime(2026, 5, 4, 12, tzinfo=UTC)
        rate = sa.table(
            "risk_order_rate",
            sa.column("tenant_id"),
            sa.column("account_id"),
            sa.column("order_id"),
            sa.column("at", sa.DateTime(timezone=True)),
        )
        rows = [
            ("t1", "acc-1", "o1", at),
            ("t1", "acc-1", "o2", at + timedelta(seconds=1)),
            ("t1", "acc-1", "", at + timedelta(seconds=2)),  # counted without an id
            ("t1", "acc-2", "o3", at),
        ]
        db.write_sync(
            lambda c: c.execute(
                sa.insert(rate),
                [
                    dict(zip(("tenant_id", "account_id", "order_id", "at"), r, strict=True))
                    for r in rows
                ],
            )
        )
        migrate(db, RiskService.migrations, "risk")
        since = at - timedelta(seconds=1)

        def window(account: str) -> ratelimit.Window:
            rows = db.read_sync(
                lambda c: reservations.of_account(c, "t1", account, decided_after=since)
            )
            return ratelimit.Window(rows, after=since)

        assert window("acc-1").count(since) == 3
        assert window("acc-2").count(since) == 1
        assert window("acc-1").count(since, besides="o1") == 2
    finally:
        db.close()
