"""A live platform for tests: the real five processes on free loopback ports, on SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cli.devstack import Stack, settings_from
from gateway.apikeys import ApiKeyStore, open_database
from services.runtime.auth import mint_token
from services.runtime.config import Settings
from services.runtime.roles import PLATFORM as ROLES

# Spans reach the local files within a fraction of a second, so tests need not wait long.
T = TypeVar("T")

TEST_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100", "GATE4_LOG_LEVEL": "INFO"}


@dataclass
class LiveStack:
    stack: Stack

    @property
    def url(self) -> str:
        return self.stack.gateway_url

    @property
    def var_dir(self) -> Path:
        return self.stack.var_dir

    def settings(self) -> Settings:
        """What the processes read: their var dir, and their secrets when the stack has its own."""
        return settings_from(self.stack.env)

    def api_key(self, tenant: str) -> str:
        db = open_database(self.settings())
        try:
            return ApiKeyStore(db, 0).create_sync(tenant, "test")
        finally:
            db.close()

    def token(self, tenant: str, user: str, roles: list[str], ttl: int = 600) -> str:
        return mint_token(
            self.settings(), tenant_id=tenant, user_id=user, roles=roles, ttl_seconds=ttl
        )

    def headers(
        self, tenant: str = "acme", user: str = "alice", roles: list[str] | None = None
    ) -> dict[str, str]:
        """Valid credentials for tenant/user with the given roles (all four by default)."""
        return {
            "Authorization": f"Bearer {self.token(tenant, user, list(roles or ROLES))}",
            "X-API-Key": self.api_key(tenant),
            "X-Tenant-Id": tenant,
            "X-User-Id": user,
        }

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers or {}, timeout=10)

    def spans(self) -> list[dict[str, Any]]:
        """Every span the processes wrote to var/traces so far."""
        out: list[dict[str, Any]] = []
        for path in sorted((self.var_dir / "traces").glob("*.jsonl")):
            for line in path.read_text().splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Polls probe until it returns a truthy value (events are shipped asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def start_stack(var_dir: Path, env: dict[str, str] | None = None) -> LiveStack:
    stack = Stack(var_dir, env={**TEST_ENV, **(env or {})})
    try:
        stack.start(timeout=60)
    except Exception:
        stack.stop()
        raise
    return LiveStack(stack)


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One platform shared by the tests that leave it as they found it."""
    live = start_stack(tmp_path_factory.mktemp("stack"))
    yield live
    live.stack.stop()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LiveStack]:
    """A platform of the test's own, for tests that kill or restart processes."""
    live = start_stack(tmp_path / "stack")
    yield live
    live.stack.stop()
