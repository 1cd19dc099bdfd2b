"""Throwaway PostgreSQL databases for tests.

The server is `postgresql://postgres@127.0.0.1:5432/postgres` unless GATE4_TEST_POSTGRES_URL
names another admin URL. When it is unreachable, tests that need it are skipped, except
under CI=true, where a missing database is a failure rather than a silent gap in coverage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "GATE4_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _connect(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=3)


def unreachable_reason(admin_url: str = ADMIN_URL) -> str | None:
    """None when the server answers, else why not."""
    try:
        with _connect(admin_url) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {admin_url} is unreachable: {exc}".strip()
    return None


def require_postgres(admin_url: str = ADMIN_URL) -> str:
    """Returns the admin URL; skips the test when the server is down (fails under CI=true)."""
    reason = unreachable_reason(admin_url)
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return admin_url


def create_database(admin_url: str = ADMIN_URL) -> str:
    """Creates an empty database named gate4_test_<random hex>; returns its URL."""
    name = f"gate4_test_{uuid.uuid4().hex[:16]}"
    with _connect(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    """Drops the database, disconnecting whoever still holds it."""
    name = make_url(url).database
    assert name, f"no database named in {url}"
    with _connect(admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def fresh_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    url = create_database(admin_url)
    try:
        yield url
    finally:
        drop_database(url, admin_url)
