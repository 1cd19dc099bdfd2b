"""Per-tenant API keys, stored as SHA-256 digests in the gateway's own database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.auth import api_key_digest, api_key_id, new_api_key
from services.runtime.config import Settings
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

api_keys = sa.table(
    "gateway_api_keys",
    sa.column("key_id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("digest", sa.String),
    sa.column("label", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("revoked_at", sa.DateTime),
)


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    label: str


def open_database(settings: Settings) -> Database:
    db = Database(
        settings.database_url_for("gateway"),
        name="gateway",
        max_batch=settings.group_commit_max_batch,
    )
    migrate(db, MIGRATIONS, "gateway")
    return db


def _insert(conn: Connection, tenant_id: str, label: str) -> str:
    key = new_api_key()
    conn.execute(
        sa.insert(api_keys).values(
            key_id=key.key_id,
            tenant_id=tenant_id,
            digest=key.digest,
            label=label,
            created_at=datetime.now(UTC),
        )
    )
    return key.plaintext


class ApiKeyStore:
    def __init__(self, db: Database, cache_seconds: float) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        # digest -> (record or None, expiry); negative results are cached too, briefly.
        self._cache: dict[str, tuple[ApiKeyRecord | None, float]] = {}

    def create_sync(self, tenant_id: str, label: str) -> str:
        """Issues a key from a tool running beside the gateway (dev credentials)."""
        return self.db.write_sync(lambda c: _insert(c, tenant_id, label))

    async def create(self, tenant_id: str, label: str) -> str:
        return await self.db.write(lambda c: _insert(c, tenant_id, label))

    async def revoke(self, key_id: str) -> bool:
        def op(conn: Connection) -> bool:
            result = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return bool(result.rowcount)

        revoked = await self.db.write(op)
        self._cache.clear()
        return revoked

    async def lookup(self, plaintext: str) -> ApiKeyRecord | None:
        key_id = api_key_id(plaintext)
        if key_id is None:
            return None
        digest = api_key_digest(plaintext)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]

        def op(conn: Connection) -> ApiKeyRecord | None:
            row = conn.execute(
                sa.select(api_keys.c.key_id, api_keys.c.tenant_id, api_keys.c.label).where(
                    api_keys.c.key_id == key_id,
                    api_keys.c.digest == digest,
                    api_keys.c.revoked_at.is_(None),
                )
            ).first()
            return ApiKeyRecord(row.key_id, row.tenant_id, row.label) if row else None

        record = await self.db.read(op)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (record, now + (self.cache_seconds if record else 2.0))
        return record
