"""Idempotency keys on both backends: claim, replay, reuse, in progress, takeover, expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from services.execution import idempotency as idem
from services.execution.store import idempotency as keys
from services.runtime import errors
from services.runtime.idempotency import KeyPolicy
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow

DAY = 24 * 3600


def claim(
    db: Database,
    key: str = "key-00000001",
    digest: str = "d1",
    *,
    tenant: str = "t1",
    resource: str = "ord_1",
    lease: float = 30,
    now: datetime | None = None,
) -> idem.Claim | idem.Stored:
    at = now or utcnow()
    return db.write_sync(
        lambda c: idem.claim(
            c,
            tenant_id=tenant,
            route="SubmitOrder",
            key=key,
            digest=digest,
            resource_id=resource,
            now=at,
            policy=KeyPolicy(lease, DAY),
        )
    )


def take(db: Database, key: str = "key-00000001", **kw: Any) -> idem.Claim:
    result = claim(db, key, **kw)
    assert isinstance(result, idem.Claim)
    return result


def test_first_claim_then_replay_of_the_stored_reply(db: Database) -> None:
    first = take(db)
    assert not first.resumed
    reply = execution_pb2.Order(order_id="ord_1", status="filled")
    db.write_sync(
        lambda c: idem.complete(c, "t1", first, utcnow(), response=reply.SerializeToString())
    )
    again = claim(db, resource="ord_other")
    assert isinstance(again, idem.Stored)
    assert again.resource_id == "ord_1"
    assert execution_pb2.Order.FromString(again.response or b"") == reply


def test_another_payload_is_refused_and_a_running_key_is_busy(db: Database) -> None:
    claim(db)
    with pytest.raises(errors.IdempotencyInProgress):
        claim(db)
    with pytest.raises(errors.IdempotencyKeyReused):
        claim(db, digest="d2")


def test_keys_are_scoped_by_tenant(db: Database) -> None:
    assert isinstance(claim(db), idem.Claim)
    assert isinstance(claim(db, tenant="t2"), idem.Claim)


def test_a_stored_refusal_is_raised_again(db: Database) -> None:
    first = take(db)
    refusal = errors.RiskLimitBreached("too big", outcome="ORDER_NOTIONAL_LIMIT")
    db.write_sync(lambda c: idem.complete(c, "t1", first, utcnow(), error=refusal))
    stored = claim(db)
    assert isinstance(stored, idem.Stored) and stored.response is None
    error = stored.error()
    assert isinstance(error, errors.RiskLimitBreached) and error.outcome == "ORDER_NOTIONAL_LIMIT"


def test_release_frees_the_key(db: Database) -> None:
    first = take(db)
    db.write_sync(lambda c: idem.release(c, "t1", first))
    assert isinstance(claim(db), idem.Claim)


def test_a_lapsed_lease_is_taken_over_and_fences_out_the_old_owner(db: Database) -> None:
    old = claim(db, lease=0.01, resource="ord_first")
    later = utcnow() + timedelta(seconds=1)
    new = claim(db, resource="ord_second", now=later)
    assert isinstance(new, idem.Claim) and new.resumed and new.resource_id == "ord_first"
    assert isinstance(old, idem.Claim)
    with pytest.raises(errors.IdempotencyInProgress):
        db.write_sync(lambda c: idem.complete(c, "t1", old, utcnow(), response=b""))
    db.write_sync(lambda c: idem.complete(c, "t1", new, utcnow(), response=b"x"))


def test_keys_are_kept_a_day_then_purged(db: Database) -> None:
    first = take(db)
    db.write_sync(lambda c: idem.complete(c, "t1", first, utcnow(), response=b"x"))
    assert db.write_sync(lambda c: idem.purge_expired(c, utcnow() + timedelta(hours=23))) == 0
    assert isinstance(claim(db, now=utcnow() + timedelta(hours=23)), idem.Stored)
    # Past the TTL an unpurged key is free again; the purge removes it.
    assert isinstance(claim(db, now=utcnow() + timedelta(hours=25)), idem.Claim)
    second = take(db, key="key-00000002")
    db.write_sync(lambda c: idem.complete(c, "t1", second, utcnow(), response=b"x"))
    assert db.write_sync(lambda c: idem.purge_expired(c, utcnow() + timedelta(hours=25))) == 1
    count = db.read_sync(lambda c: c.execute(sa.select(sa.func.count()).select_from(keys)).scalar())
    assert count == 1


def test_the_digest_ignores_the_key_but_not_the_payload() -> None:
    a = execution_pb2.SubmitOrderRequest(deployment_id="d", quantity="1", idempotency_key="k1")
    b = execution_pb2.SubmitOrderRequest(deployment_id="d", quantity="1", idempotency_key="k2")
    c = execution_pb2.SubmitOrderRequest(deployment_id="d", quantity="2", idempotency_key="k1")
    assert idem.request_digest(a) == idem.request_digest(b) != idem.request_digest(c)
