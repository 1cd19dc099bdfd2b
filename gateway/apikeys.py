"""Per-tenant API keys, stored as SHA-256 digests in the gateway's own database.

Life cycle (run by operators with `gate4 apikeys`, cli/apikeys.py, on this database): create,
list (key prefix and label, never the key), revoke, and rotate (a new key with the same tenant
and label; the old one keeps working for a grace period, then expires). The gateway caches a
lookup for GATE4_API_KEY_CACHE_SECONDS (default 30 s), never past the key's expiry, so a key
revoked elsewhere is refused within that time; unknown keys are cached for 2 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.auth import API_KEY_PREFIX, api_key_digest, api_key_id, new_api_key
from services.runtime.config import Settings
from services.runtime.resilience import SYSTEM, Clock
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
    sa.column("expires_at", sa.DateTime),
    sa.column("replaced_by", sa.String),
)


class ApiKeyNotFound(LookupError):
    """No key with that id, or it can no longer be rotated (revoked or expired)."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the gateway learns from a valid key."""

    key_id: str
    tenant_id: str
    label: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    """What an operator sees of a key: never the key or its digest."""

    key_id: str
    tenant_id: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None

    @property
    def prefix(self) -> str:
        """The part of the key that names it (`g4k_<keyId>`), safe to show and log."""
        return f"{API_KEY_PREFIX}_{self.key_id}"

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= now else "expiring"
        return "active"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "keyId": self.key_id,
            "tenantId": self.tenant_id,
            "label": self.label,
            "status": self.status(now),
            "createdAt": _rfc3339(self.created_at),
            "expiresAt": _rfc3339(self.expires_at),
            "revokedAt": _rfc3339(self.revoked_at),
            "replacedBy": f"{API_KEY_PREFIX}_{self.replaced_by}" if self.replaced_by else None,
        }


def open_database(settings: Settings) -> Database:
    db = Database(
        settings.database_url_for("gateway"),
        name="gateway",
        max_batch=settings.group_commit_max_batch,
        trace_sql=settings.trace_sql,
    )
    if settings.migrate_on_start:
        migrate(db, MIGRATIONS, "gateway")
    return db


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time here is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _rfc3339(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _info(row: Any) -> ApiKeyInfo:
    created = _utc(row.created_at)
    assert created is not None
    return ApiKeyInfo(
        key_id=row.key_id,
        tenant_id=row.tenant_id,
        label=row.label,
        created_at=created,
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        replaced_by=row.replaced_by,
    )


_INFO_COLUMNS = (
    api_keys.c.key_id,
    api_keys.c.tenant_id,
    api_keys.c.label,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.replaced_by,
)


def _insert(
    conn: Connection, tenant_id: str, label: str, now: datetime, expires_at: datetime | None = None
) -> tuple[str, str]:
    key = new_api_key()
    conn.execute(
        sa.insert(api_keys).values(
            key_id=key.key_id,
            tenant_id=tenant_id,
            digest=key.digest,
            label=label,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return key.key_id, key.plaintext


def _get(conn: Connection, key_id: str) -> ApiKeyInfo | None:
    row = conn.execute(sa.select(*_INFO_COLUMNS).where(api_keys.c.key_id == key_id)).first()
    return _info(row) if row else None


def _revoke(conn: Connection, key_id: str, now: datetime) -> ApiKeyInfo | None:
    conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return _get(conn, key_id)


def _rotate(
    conn: Connection, key_id: str, grace: timedelta, now: datetime
) -> tuple[str, ApiKeyInfo]:
    old = _get(conn, key_id)
    if old is None or old.status(now) in ("revoked", "expired"):
        raise ApiKeyNotFound(f"no active API key {API_KEY_PREFIX}_{key_id} to rotate")
    new_id, plaintext = _insert(conn, old.tenant_id, old.label, now)
    ends = now + grace
    if old.expires_at is not None:
        ends = min(ends, old.expires_at)  # a rotation never extends a key's life
    conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.key_id == key_id)
        .values(expires_at=ends, replaced_by=new_id)
    )
    new = _get(conn, new_id)
    assert new is not None
    return plaintext, new


def _active(conn: Connection, plaintext: str, now: datetime) -> ApiKeyRecord | None:
    key_id = api_key_id(plaintext)
    if key_id is None:
        return None
    row = conn.execute(
        sa.select(
            api_keys.c.key_id, api_keys.c.tenant_id, api_keys.c.label, api_keys.c.expires_at
        ).where(
            api_keys.c.key_id == key_id,
            api_keys.c.digest == api_key_digest(plaintext),
            api_keys.c.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    expires_at = _utc(row.expires_at)
    if expires_at is not None and expires_at <= now:
        return None
    return ApiKeyRecord(row.key_id, row.tenant_id, row.label, expires_at)


class ApiKeyStore:
    def __init__(
        self,
        db: Database,
        cache_seconds: float,
        negative_cache_seconds: float = 2.0,
        clock: Clock = SYSTEM,
    ) -> None:
        self.db = db
        self.clock = clock
        self.cache_seconds = cache_seconds
        # An unknown key's refusal (GATE4_API_KEY_NEGATIVE_CACHE_SECONDS), at most as long.
        self.negative_cache_seconds = min(negative_cache_seconds, cache_seconds)
        # digest -> (record or None, expiry on the monotonic clock).
        self._cache: dict[str, tuple[ApiKeyRecord | None, float]] = {}

    # -- life cycle (gate4 apikeys, dev credentials) -----------------------------------------

    def create_sync(self, tenant_id: str, label: str, expires_at: datetime | None = None) -> str:
        """Issues a key; returns it in plaintext, which is never stored or shown again."""
        now = self.clock.now()
        return self.db.write_sync(lambda c: _insert(c, tenant_id, label, now, expires_at))[1]

    def list_sync(self, tenant_id: str | None = None) -> list[ApiKeyInfo]:
        query = sa.select(*_INFO_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        return self.db.read_sync(lambda c: [_info(row) for row in c.execute(query)])

    def revoke_sync(self, key_id: str) -> ApiKeyInfo:
        """Revokes at once (idempotent); gateways refuse it within their cache lifetime."""
        now = self.clock.now()
        info = self.db.write_sync(lambda c: _revoke(c, key_id, now))
        if info is None:
            raise ApiKeyNotFound(f"no API key {API_KEY_PREFIX}_{key_id}")
        self._cache.clear()
        return info

    def rotate_sync(self, key_id: str, grace: timedelta) -> tuple[str, ApiKeyInfo]:
        """A new key for the same tenant and label; the old one expires after `grace`."""
        now = self.clock.now()
        result = self.db.write_sync(lambda c: _rotate(c, key_id, grace, now))
        self._cache.clear()
        return result

    def active_sync(self, plaintext: str) -> ApiKeyRecord | None:
        """The key's record when it is valid now (no cache)."""
        now = self.clock.now()
        return self.db.read_sync(lambda c: _active(c, plaintext, now))

    # -- the gateway's check -----------------------------------------------------------------

    async def lookup(self, plaintext: str) -> ApiKeyRecord | None:
        if api_key_id(plaintext) is None:
            return None
        digest = api_key_digest(plaintext)
        now = self.clock.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        wall = self.clock.now()
        record = await self.db.read(lambda c: _active(c, plaintext, wall))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (record, now + self._cache_for(record, wall))
        return record

    def _cache_for(self, record: ApiKeyRecord | None, now: datetime) -> float:
        if record is None:
            return self.negative_cache_seconds
        if record.expires_at is None:
            return self.cache_seconds
        left = (record.expires_at - now).total_seconds()
        return max(0.0, min(self.cache_seconds, left))
