"""A conversation database on both backends, migrated as the service migrates it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.conversation.app import ConversationService
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """Migrated, with its group-commit writer running (db.write_sync and db.write)."""
    database = Database(database_url, name="conversation")
    migrate(database, ConversationService.migrations, "conversation")
    database.start()
    yield database
    database.close()
