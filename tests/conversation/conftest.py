"""A conversation database on both backends, migrated as the service migrates it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.conversation.app import ConversationService
from services.runtime.storage import Database
from tests.support.databases import migrated


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """Migrated, with its group-commit writer running (db.write_sync and db.write)."""
    with migrated(database_url, "conversation", ConversationService.migrations) as database:
        yield database
