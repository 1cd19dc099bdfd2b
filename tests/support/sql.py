"""Direct SQL against a service's database, behind the service's back (tamper tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from services.runtime.storage import normalise_url


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    """One connection in one transaction, committed on success; the engine is disposed."""
    engine = sa.create_engine(normalise_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def execute(url: str, statement: str, params: dict[str, Any] | None = None) -> Any:
    with connect(url) as conn:
        result = conn.execute(sa.text(statement), params or {})
        return result.all() if result.returns_rows else result.rowcount
