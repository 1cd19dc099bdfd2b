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
        assert current_revision(db, "risk") == "risk0002"

        def tables(conn: sa.Connection) -> set[str]:
            return set(sa.inspect(conn).get_table_names())

        assert {"risk_equity", "risk_order_rate", "risk_kill_switches"} <= db.read_sync(tables)
        cfg = alembic_config(RiskService.migrations, "risk")
        with db.writer_engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "risk0001")
            conn.commit()
        assert current_revision(db, "risk") == "risk0001"
        assert "risk_equity" not in db.read_sync(tables)
        migrate(db, RiskService.migrations, "risk")
        assert current_revision(db, "risk") == "risk0002"
    finally:
        db.close()
