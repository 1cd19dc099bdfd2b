"""An execution database on both backends, migrated and with its group-commit writer running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.execution.app import ExecutionService
from services.runtime.storage import Database
from tests.support.databases import migrated


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with migrated(database_url, "execution", ExecutionService.migrations) as database:
        yield database
