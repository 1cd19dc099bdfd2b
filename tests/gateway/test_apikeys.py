"""The API key store's life cycle (gateway/apikeys.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.apikeys import ApiKeyNotFound, ApiKeyStore, open_database
from services.runtime.auth import api_key_digest, api_key_id
from services.runtime.config import Settings
from services.runtime.resilience import ManualClock
from services.runtime.storage import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_database(Settings(gateway_database_url=database_url))
    database.start()
    yield database
    database.close()


def lookup(store: ApiKeyStore, key: str) -> str | None:
    record = asyncio.run(store.lookup(key))
    return record.tenant_id if record else None


def test_create_list_revoke_and_the_listing_never_holds_a_key(db: Database) -> None:
    store = ApiKeyStore(db, 0)
    first = store.create_sync("acme", "ci")
    second = store.create_sync("globex", "desk")
    assert lookup(store, first) == "acme" and lookup(store, second) == "globex"

    listed = store.list_sync()
    assert [(k.prefix, k.tenant_id, k.label) for k in listed] == [
        (f"g4k_{api_key_id(first)}", "acme", "ci"),
        (f"g4k_{api_key_id(second)}", "globex", "desk"),
    ]
    assert [k.tenant_id for k in store.list_sync("acme")] == ["acme"]
    shown = repr(listed) + repr([k.as_dict(datetime.now(UTC)) for k in listed])
    for key in (first, second):
        assert key not in shown and api_key_digest(key) not in shown
        assert key.split("_", 2)[2] not in shown

    revoked = store.revoke_sync(str(api_key_id(first)))
    assert revoked.status(datetime.now(UTC)) == "revoked"
    assert lookup(store, first) is None and lookup(store, second) == "globex"
    assert store.revoke_sync(str(api_key_id(first))).revoked_at == revoked.revoked_at
    with pytest.raises(ApiKeyNotFound):
        store.revoke_sync("0000nothere0")


def test_rotation_keeps_the_old_key_for_its_grace_period_only(db: Database) -> None:
    clock = ManualClock(datetime.now(UTC))
    store = ApiKeyStore(db, 0, clock=clock)
    old = store.create_sync("acme", "ci")
    new, info = store.rotate_sync(str(api_key_id(old)), timedelta(seconds=1))
    assert (info.tenant_id, info.label, info.status(clock.now())) == ("acme", "ci", "active")
    assert lookup(store, old) == "acme" and lookup(store, new) == "acme"
    (previous,) = [k for k in store.list_sync("acme") if k.key_id == api_key_id(old)]
    assert previous.status(clock.now()) == "expiring"
    assert previous.replaced_by == info.key_id
    clock.advance(1.0)  # the grace period ends
    assert lookup(store, old) is None and lookup(store, new) == "acme"
    # An expired or revoked key cannot be rotated again.
    with pytest.raises(ApiKeyNotFound):
        store.rotate_sync(str(api_key_id(old)), timedelta(hours=1))
    # Rotating never lengthens a key's life: a second rotation keeps the earlier end.
    newer, _ = store.rotate_sync(info.key_id, timedelta(seconds=60))
    _, _ = store.rotate_sync(info.key_id, timedelta(days=30))
    (again,) = [k for k in store.list_sync("acme") if k.key_id == info.key_id]
    assert again.expires_at is not None
    assert again.expires_at == clock.now() + timedelta(seconds=60)
    assert lookup(store, newer) == "acme"


def test_a_cached_key_is_refused_once_the_cache_lifetime_passed(db: Database) -> None:
    clock = ManualClock(datetime.now(UTC))
    writer = ApiKeyStore(db, 0, clock=clock)  # the operator's `gate4 apikeys`, another process
    gateway = ApiKeyStore(db, 0.5, clock=clock)
    key = writer.create_sync("acme", "ci")
    assert lookup(gateway, key) == "acme"
    writer.revoke_sync(str(api_key_id(key)))
    clock.advance(0.499)
    assert lookup(gateway, key) == "acme"  # still cached: the documented window
    clock.advance(0.001)
    assert lookup(gateway, key) is None


def test_the_cache_never_outlives_a_keys_expiry(db: Database) -> None:
    clock = ManualClock(datetime.now(UTC))
    store = ApiKeyStore(db, 30, clock=clock)
    key = store.create_sync("acme", "ci", expires_at=clock.now() + timedelta(seconds=0.5))
    assert lookup(store, key) == "acme"
    clock.advance(0.5)
    assert lookup(store, key) is None


def test_only_a_well_formed_key_of_the_right_digest_is_found(db: Database) -> None:
    store = ApiKeyStore(db, 0)
    key = store.create_sync("acme", "ci")
    assert store.active_sync(key) is not None
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "g4k__x", "bearer", ""):
        assert lookup(store, wrong) is None and store.active_sync(wrong) is None


def test_an_unknown_keys_refusal_is_cached_no_longer_than_a_known_key(db: Database) -> None:
    """GATE4_API_KEY_NEGATIVE_CACHE_SECONDS, capped by GATE4_API_KEY_CACHE_SECONDS."""
    assert ApiKeyStore(db, 30, 5).negative_cache_seconds == 5
    assert ApiKeyStore(db, 1, 5).negative_cache_seconds == 1
