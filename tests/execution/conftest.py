"""An execution database on both backends, migrated and with its group-commit writer running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.execution.app import ExecutionService
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, name="execution")
    migrate(database, ExecutionService.migrations, "execution")
    database.start()
    yield database
    database.close()
