"""turns.py on both backends: one running turn per session, a claim past its lease taken
over, replay by Idempotency-Key (digest checked), key lifetime, completion and release.
Times are passed in: T0 and later instants, never the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from gate4.conversation.v1 import conversation_pb2
from services.conversation import sessions, turns
from services.runtime import errors
from services.runtime.idempotency import KeyPolicy
from services.runtime.storage import Database

T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)
POLICY = KeyPolicy(lease_seconds=30, ttl_seconds=24 * 3600)
#: When a claim made at T0 has lapsed, and when a turn claimed at T0 has expired.
LAPSED = T0 + POLICY.lease
EXPIRED = POLICY.expires_at(T0)


@pytest.fixture
def session_id(db: Database) -> str:
    return db.write_sync(lambda c: sessions.create(c, "t1", "alice", "openclaw", "triage", {}, T0))


def claim(
    db: Database,
    session_id: str,
    turn_count: int = 0,
    key: str = "",
    digest: str = "d1",
    now: datetime = T0,
) -> turns.Claim:
    return db.write_sync(
        lambda c: turns.claim(c, "t1", session_id, turn_count, key, digest, now, POLICY)
    )


def replay(
    db: Database, session_id: str, key: str, digest: str = "d1", now: datetime = T0
) -> conversation_pb2.Turn | None:
    return db.read_sync(lambda c: turns.replay(c, session_id, key, digest, now))


def complete(db: Database, session_id: str, claimed: turns.Claim) -> conversation_pb2.Turn:
    turn = conversation_pb2.Turn(
        turn_id=claimed.turn_id,
        session_id=session_id,
        sequence=claimed.sequence,
        message="stop dep_1",
        request_id="req_turn_1",
    )
    db.write_sync(lambda c: turns.complete(c, turn, T0))
    return turn


def rows(db: Database, session_id: str) -> list[tuple[str, int, str]]:
    t = turns.turns
    return [
        (r.turn_id, r.sequence, r.status)
        for r in db.read_sync(
            lambda c: c.execute(
                sa.select(t.c.turn_id, t.c.sequence, t.c.status)
                .where(t.c.session_id == session_id)
                .order_by(t.c.sequence)
            ).all()
        )
    ]


def test_a_second_turn_is_refused_while_one_runs(db: Database, session_id: str) -> None:
    """One running turn per session: a second claim is a 409 and writes nothing."""
    first = claim(db, session_id)
    assert first.sequence == 1 and first.turn_id.startswith("trn_")
    with pytest.raises(errors.StateConflict):
        claim(db, session_id, key="key-other")
    assert rows(db, session_id) == [(first.turn_id, 1, "in_progress")]


def test_turns_of_other_sessions_run_side_by_side(db: Database, session_id: str) -> None:
    """The one-turn rule is per session."""
    other = db.write_sync(lambda c: sessions.create(c, "t1", "bob", "web", "other", {}, T0))
    claim(db, session_id)
    assert claim(db, other).sequence == 1


def test_a_claim_holds_the_session_for_its_lease_then_is_taken_over(
    db: Database, session_id: str
) -> None:
    """A claim past its lease belongs to a dead process: the next turn replaces it."""
    dead = claim(db, session_id)
    with pytest.raises(errors.StateConflict):
        claim(db, session_id, now=LAPSED - timedelta(seconds=1))
    taken = claim(db, session_id, now=LAPSED)
    assert taken.turn_id != dead.turn_id and taken.sequence == 1
    assert rows(db, session_id) == [(taken.turn_id, 1, "in_progress")]


def test_a_claim_written_without_a_lease_holds_the_session_for_one_from_its_claim(
    db: Database, session_id: str
) -> None:
    """A release before turn leases wrote none: during a rolling upgrade its running turn
    still holds the session for a lease from when it was claimed."""
    old = claim(db, session_id)
    t = turns.turns
    db.write_sync(
        lambda c: c.execute(sa.update(t).where(t.c.turn_id == old.turn_id).values(lease_until=None))
    )
    with pytest.raises(errors.StateConflict):
        claim(db, session_id, now=LAPSED - timedelta(seconds=1))
    assert claim(db, session_id, now=LAPSED).turn_id != old.turn_id


def test_a_retry_with_the_key_of_a_lapsed_claim_takes_it_over(
    db: Database, session_id: str
) -> None:
    """The client's retry after a crash (same key) takes the lapsed claim over; the dead
    attempt, should it come back, can no longer complete the turn."""
    dead = claim(db, session_id, key="key-turn-1")
    with pytest.raises(errors.IdempotencyInProgress):
        replay(db, session_id, "key-turn-1", now=LAPSED - timedelta(seconds=1))
    assert replay(db, session_id, "key-turn-1", now=LAPSED) is None
    assert claim(db, session_id, key="key-turn-1", now=LAPSED).sequence == 1
    with pytest.raises(errors.IdempotencyInProgress):
        complete(db, session_id, dead)


def test_an_expired_key_names_a_new_turn(db: Database, session_id: str) -> None:
    """Past its lifetime a key is free: it names the next turn, the old turn stays."""
    first = claim(db, session_id, key="key-turn-1")
    complete(db, session_id, first)
    assert replay(db, session_id, "key-turn-1", now=EXPIRED - timedelta(seconds=1))
    assert replay(db, session_id, "key-turn-1", digest="d2", now=EXPIRED) is None
    second = claim(db, session_id, turn_count=1, key="key-turn-1", digest="d2", now=EXPIRED)
    assert rows(db, session_id) == [
        (first.turn_id, 1, "completed"),
        (second.turn_id, 2, "in_progress"),
    ]


def test_a_completed_turn_is_replayed_byte_for_byte_by_its_key(
    db: Database, session_id: str
) -> None:
    """A running key is in progress; once completed its turn replays byte for byte."""
    claimed = claim(db, session_id, key="key-turn-1")
    with pytest.raises(errors.IdempotencyInProgress):
        replay(db, session_id, "key-turn-1")  # still running
    turn = complete(db, session_id, claimed)
    stored = replay(db, session_id, "key-turn-1")
    assert stored is not None and stored.SerializeToString() == turn.SerializeToString()
    assert rows(db, session_id) == [(claimed.turn_id, 1, "completed")]
    assert replay(db, session_id, "") is None  # no key: nothing to replay
    assert replay(db, session_id, "key-turn-2") is None  # a new key


def test_a_key_reused_with_another_turn_is_refused(db: Database, session_id: str) -> None:
    """The same key with another request digest is IDEMPOTENCY_KEY_REUSED."""
    complete(db, session_id, claim(db, session_id, key="key-turn-1", digest="d1"))
    with pytest.raises(errors.IdempotencyKeyReused):
        replay(db, session_id, "key-turn-1", digest="d2")


def test_keys_are_scoped_to_their_session(db: Database, session_id: str) -> None:
    """A key used on one session is new on another."""
    other = db.write_sync(lambda c: sessions.create(c, "t1", "bob", "web", "other", {}, T0))
    complete(db, session_id, claim(db, session_id, key="key-turn-1"))
    assert replay(db, other, "key-turn-1", digest="d2") is None
    assert claim(db, other, key="key-turn-1", digest="d2").sequence == 1


def test_a_released_claim_frees_the_session_for_the_same_sequence(
    db: Database, session_id: str
) -> None:
    """A failed turn's claim is released: the retry runs anew with the same sequence."""
    failed = claim(db, session_id, key="key-turn-1")
    db.write_sync(lambda c: turns.release(c, failed.turn_id))
    assert rows(db, session_id) == []
    assert replay(db, session_id, "key-turn-1") is None  # the retry runs anew
    retried = claim(db, session_id, key="key-turn-1")
    assert retried.sequence == 1 and retried.turn_id != failed.turn_id


def test_release_leaves_a_completed_turn_alone(db: Database, session_id: str) -> None:
    """Release deletes only an in-progress claim, never a completed turn."""
    claimed = claim(db, session_id, key="key-turn-1")
    complete(db, session_id, claimed)
    db.write_sync(lambda c: turns.release(c, claimed.turn_id))
    assert rows(db, session_id) == [(claimed.turn_id, 1, "completed")]


def test_a_sequence_or_key_taken_already_is_a_conflict(db: Database, session_id: str) -> None:
    """A claim racing one that completed the same sequence (or used the same key) loses."""
    complete(db, session_id, claim(db, session_id, key="key-turn-1"))
    with pytest.raises(errors.StateConflict):
        claim(db, session_id, turn_count=0)  # sequence 1 is taken
    with pytest.raises(errors.StateConflict):
        claim(db, session_id, turn_count=1, key="key-turn-1")  # so is the key
    assert claim(db, session_id, turn_count=1).sequence == 2
