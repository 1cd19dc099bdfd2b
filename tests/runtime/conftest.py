"""The storage tests' database: the throwaway `items` table on both backends, group commit
started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from tests.support.migrations import items_migrations


@pytest.fixture
def items_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = Database(database_url, name="demo", max_batch=256)
    migrate(database, items_migrations(tmp_path / "migrations"), "demo")
    database.start()
    try:
        yield database
    finally:
        database.close()
