"""Versioned schema migrations with Alembic, one version history per service.

All services share one Alembic environment (alembic/env.py beside this file); each keeps
its revisions in services/<name>/migrations/ and its own version table, so several services
can share one PostgreSQL database.

Processes apply their own migrations at start unless GATE4_MIGRATE_ON_START is false; then
`python -m services.runtime.storage.migrations [NAME ...]` applies them (every component's,
or the named ones) with the credentials in GATE4_DATABASE_URL / GATE4_<NAME>_DATABASE_URL,
which there belong to a role allowed to change the schema (deploy/k8s/base/migrate-job.yaml).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services.runtime.config import Settings
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


def migration_folders() -> dict[str, Path]:
    """Every component with a database, and the folder its revisions live in."""
    # Imported here: the components import this module.
    from gateway.apikeys import MIGRATIONS as gateway_migrations
    from services.audit.app import AuditService
    from services.conversation.app import ConversationService
    from services.execution.app import ExecutionService
    from services.risk.app import RiskService

    return {
        "audit": AuditService.migrations,
        "risk": RiskService.migrations,
        "execution": ExecutionService.migrations,
        "conversation": ConversationService.migrations,
        "gateway": gateway_migrations,
    }


def migrate_all(settings: Settings, names: Sequence[str] = ()) -> dict[str, str | None]:
    """Upgrades each named component's database (all when none are named) to head; returns
    the revision each is at afterwards."""
    folders = migration_folders()
    done: dict[str, str | None] = {}
    for name in names or folders:
        db = Database(settings.database_url_for(name), name=name)
        try:
            migrate(db, folders[name], name)
            done[name] = current_revision(db, name)
        finally:
            db.close()
    return done


def main(argv: Sequence[str] | None = None) -> int:
    folders = list(migration_folders())
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.storage.migrations",
        description="Apply the database migrations of every component (or the named ones).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(folders))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(folders))
    if unknown:
        parser.error(f"unknown component {', '.join(unknown)} (known: {', '.join(folders)})")
    settings = Settings()
    if settings.env == "prod":
        from services.runtime.production import database_problems

        names = args.names or folders
        problems = sorted({p for name in names for p in database_problems(settings, name)})
        if problems:
            lines = "".join(f"\n  - {problem}" for problem in problems)
            sys.stderr.write(f"gate4: migrations refuse to run with GATE4_ENV=prod:{lines}\n")
            return 2
    for name, revision in migrate_all(settings, args.names).items():
        sys.stdout.write(f"{name}: at {revision}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
