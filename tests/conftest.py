"""Fixtures shared by the whole suite: databases on both storage backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers under tests/support assert on the tests' behalf: their failures should read like a
# test's own (pytest's assertion rewriting), which needs registering before they import.
pytest.register_assert_rewrite("tests.support")

from tests.support import postgres  # noqa: E402

# The live platform fixtures (live_stack, private_stack) for every suite: one shared stack.
pytest_plugins = ["tests.support.stack"]


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """Admin URL of the test PostgreSQL server; skips (fails under CI=true) when it is down."""
    return postgres.require_postgres()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database gate4_test_<hex>, dropped (WITH (FORCE)) after the test."""
    with postgres.fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both backends: a SQLite file under tmp_path, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
