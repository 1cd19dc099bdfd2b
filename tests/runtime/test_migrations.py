"""Versioned migrations (services.runtime.storage.migrations) on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import sqlalchemy as sa

from services.runtime.storage import Database
from services.runtime.storage.migrations import current_revision, migrate
from tests.support.migrations import items_migrations, write_revision


def _tables(db: Database) -> set[str]:
    return set(db.read_sync(lambda c: sa.inspect(c).get_table_names()))


def test_migrations_apply_record_the_revision_and_reapply_as_no_ops(
    database_url: str, tmp_path: Path
) -> None:
    folder = items_migrations(tmp_path / "migrations")
    db = Database(database_url, name="demo")
    try:
        assert current_revision(db, "demo") is None
        migrate(db, folder, "demo")
        assert current_revision(db, "demo") == "0001"
        assert {"items", "demo_schema_version"} <= _tables(db)

        db.write_sync(lambda c: c.execute(sa.text("INSERT INTO items (name) VALUES ('kept')")))
        migrate(db, folder, "demo")  # at head already: nothing runs, nothing is recreated
        assert current_revision(db, "demo") == "0001"
        assert db.read_sync(lambda c: c.execute(sa.text("SELECT name FROM items")).all()) == [
            ("kept",)
        ]
    finally:
        db.close()


def test_a_new_revision_upgrades_from_the_recorded_one(database_url: str, tmp_path: Path) -> None:
    folder = items_migrations(tmp_path / "migrations")
    db = Database(database_url, name="demo")
    try:
        migrate(db, folder, "demo")
        write_revision(
            folder,
            "0002",
            'op.add_column("items", sa.Column("colour", sa.String(16), nullable=True))',
            down_revision="0001",
        )
        migrate(db, folder, "demo")
        assert current_revision(db, "demo") == "0002"
        columns = db.read_sync(
            lambda c: {col["name"] for col in sa.inspect(c).get_columns("items")}
        )
        assert columns == {"id", "name", "colour"}
    finally:
        db.close()


def test_services_sharing_a_database_keep_separate_version_tables(
    database_url: str, tmp_path: Path
) -> None:
    alpha = items_migrations(tmp_path / "alpha")
    beta = tmp_path / "beta"
    write_revision(
        beta,
        "b001",
        'op.create_table("beta_things", sa.Column("id", sa.Integer, primary_key=True))',
    )
    db = Database(database_url, name="shared")
    try:
        migrate(db, alpha, "alpha")
        migrate(db, beta, "beta")
        assert current_revision(db, "alpha") == "0001"
        assert current_revision(db, "beta") == "b001"
        assert {"alpha_schema_version", "beta_schema_version", "items", "beta_things"} <= _tables(
            db
        )
    finally:
        db.close()


def _migrate_in_child(url: str, folder: str) -> None:
    db = Database(url, name="demo")
    try:
        migrate(db, Path(folder), "demo")
    finally:
        db.close()


def test_concurrent_migrations_from_several_processes_wait_for_each_other(
    database_url: str, tmp_path: Path
) -> None:
    """Services start at once against one database: one applies the revision, none fails.

    Processes, not threads: Alembic's environment is process-global, and it is processes
    that race in production.
    """
    folder = items_migrations(tmp_path / "migrations")
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_migrate_in_child, args=(database_url, str(folder))) for _ in range(3)
    ]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join(60)
        assert [child.exitcode for child in children] == [0, 0, 0]
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    db = Database(database_url, name="demo")
    try:
        assert current_revision(db, "demo") == "0001"
    finally:
        db.close()
