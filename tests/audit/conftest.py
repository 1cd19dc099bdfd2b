"""One real audit process per backend, shared by a module's tests; each test uses its own tenant."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import postgres
from tests.support.audit import RunningAudit, new_tenant, running_audit


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def audit(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningAudit]:
    var_dir = tmp_path_factory.mktemp(f"audit-{request.param}")
    if request.param == "sqlite":
        # No URL: the service's default, var/audit.db.
        with running_audit(var_dir) as service:
            yield service
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    with postgres.fresh_database(admin_url) as url, running_audit(var_dir, url) as service:
        yield service


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses, so tests can share one audit process."""
    return new_tenant()
