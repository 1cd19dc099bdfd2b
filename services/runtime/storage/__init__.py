"""One storage layer: SQLite by default, PostgreSQL when a URL is configured."""

from services.runtime.storage.database import (
    Database,
    after_commit,
    is_postgres_url,
    normalise_url,
)

__all__ = ["Database", "after_commit", "is_postgres_url", "normalise_url"]
