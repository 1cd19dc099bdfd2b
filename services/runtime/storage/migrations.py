"""Versioned schema migrations with Alembic, one version history per service.

All services share one Alembic environment (alembic/env.py beside this file); each keeps
its revisions in services/<name>/migrations/ and its own version table, so several services
can share one PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services.runtime.storage.database import Database

ENV_DIR = Path(__file__).resolve().parent / "alembic"


def alembic_config(versions_dir: Path, service: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ENV_DIR))
    cfg.set_main_option("version_locations", str(versions_dir))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["version_table"] = f"{service}_schema_version"
    return cfg


def migrate(db: Database, versions_dir: Path, service: str, target: str = "head") -> None:
    """Upgrades the database to target; concurrent processes wait for each other."""
    cfg = alembic_config(versions_dir, service)
    with db.writer_engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"gate4-migrate-{service}"}
            )
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)
            conn.commit()
        finally:
            if db.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(hashtext(:k))"),
                    {"k": f"gate4-migrate-{service}"},
                )
                conn.commit()


def current_revision(db: Database, service: str) -> str | None:
    table = f"{service}_schema_version"

    def read(conn: sa.Connection) -> str | None:
        if not sa.inspect(conn).has_table(table):
            return None
        value = conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalar()  # noqa: S608
        return str(value) if value is not None else None

    return db.read_sync(read)
