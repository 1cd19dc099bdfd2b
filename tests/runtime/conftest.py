"""The storage tests' database: the throwaway `items` table on both backends, group commit
started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime.storage import Database
from tests.support.databases import migrated
from tests.support.migrations import items_migrations


@pytest.fixture
def items_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    with migrated(database_url, "demo", items_migrations(tmp_path / "migrations")) as database:
        yield database
