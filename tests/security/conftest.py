"""A platform with secrets of its own, for the security tests.

`security_stack` runs the five real processes with a random JWT secret, a random token per
internal identity, explicit token digests (as prod requires) and API-key lookups cached for
one second, logging at DEBUG. When PostgreSQL answers, the gateway keeps its API keys in a
database reached by a role with a random password, so that password is one more secret the
sweep looks for. `Secrets` lists every value that must never show up anywhere.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from services.runtime.config import IDENTITIES, token_digest
from tests.support import postgres
from tests.support.stack import LiveStack, start_stack

#: Seconds a gateway caches an API key lookup on this stack.
KEY_CACHE_SECONDS = 1.0


@dataclass
class Secrets:
    """Every secret the stack was started with (values never printed by a test)."""

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, name: str, value: str) -> None:
        self.values[name] = value

    def found_in(self, text: str | bytes) -> list[str]:
        """The names of the secrets that occur in text."""
        data = text.encode() if isinstance(text, str) else text
        return [name for name, value in self.values.items() if value.encode() in data]


@dataclass
class SecurityStack:
    live: LiveStack
    secrets: Secrets
    env: dict[str, str]


@contextmanager
def password_database() -> Iterator[tuple[str, str] | None]:
    """A fresh database owned by a login role with a random password: (url, password), or
    None when PostgreSQL does not answer."""
    if postgres.unreachable_reason() is not None:
        yield None
        return
    name = f"gate4_test_{uuid.uuid4().hex[:16]}"
    role = f"gate4_sweep_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(32)
    admin = postgres.ADMIN_URL
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        owned = sql.SQL("CREATE DATABASE {} OWNER {}")
        conn.execute(owned.format(sql.Identifier(name), sql.Identifier(role)))
    url = make_url(admin).set(username=role, password=password, database=name)
    try:
        yield url.render_as_string(hide_password=False), password
    finally:
        postgres.drop_database(url.render_as_string(hide_password=False), admin)
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def security_env(found: Secrets) -> dict[str, str]:
    env = {
        "GATE4_JWT_SECRET": secrets.token_urlsafe(48),
        "GATE4_API_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
        "GATE4_LOG_LEVEL": "DEBUG",
    }
    found.add("GATE4_JWT_SECRET", env["GATE4_JWT_SECRET"])
    digests = []
    for name in IDENTITIES:
        token = secrets.token_urlsafe(32)
        env[f"GATE4_{name.upper()}_SERVICE_TOKEN"] = token
        found.add(f"GATE4_{name.upper()}_SERVICE_TOKEN", token)
        digests.append(f"{name}={token_digest(token)}")
    env["GATE4_SERVICE_TOKEN_DIGESTS"] = ",".join(digests)
    return env


@pytest.fixture(scope="package")
def security_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityStack]:
    found = Secrets()
    env = security_env(found)
    with password_database() as database:
        if database is not None:
            env["GATE4_GATEWAY_DATABASE_URL"], password = database
            found.add("database password", password)
        var_dir: Path = tmp_path_factory.mktemp("security-stack")
        live = start_stack(var_dir, env)
        try:
            yield SecurityStack(live, found, env)
        finally:
            live.stack.stop()
