"""A database as a service runs it: migrated to head, its group-commit writer started."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate


@contextmanager
def migrated(url: str, name: str, migrations: Path) -> Iterator[Database]:
    """`name`'s database at `url`, migrated from `migrations` and started; closed after."""
    database = Database(url, name=name)
    migrate(database, migrations, name)
    database.start()
    try:
        yield database
    finally:
        database.close()
