"""The hash chain's pure logic: canonical form, hashing, timestamps and the chain checker."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.audit import chain
from services.audit.chain import (
    GENESIS_HASH,
    ChainChecker,
    ceil_to_microsecond,
    format_timestamp,
    link_hash,
    parse_timestamp,
)
from services.runtime.auditfields import EventContent

CONTENT = EventContent(
    tenant_id="t1",
    sequence=1,
    event_id="evt_00000001",
    type="risk.decision",
    source="risk",
    occurred_at="2030-01-02T03:04:05.678901Z",
    recorded_at="2030-01-02T03:04:05.700000Z",
    request_id="req_0001",
    outcome="APPROVED",
    reason="naïve ✓",
    data={"limit": 5.0, "ratio": 0.25, "b": [1, "x"], "a": {"z": None, "y": True}},
)

# The documented form, written out by hand: 19 keys sorted, no spaces, raw UTF-8, 5.0 -> 5.
EXPECTED_CANONICAL = (
    '{"accountId":"","channel":"",'
    '"data":{"a":{"y":true,"z":null},"b":[1,"x"],"limit":5,"ratio":0.25},'
    '"deploymentId":"","eventId":"evt_00000001","occurredAt":"2030-01-02T03:04:05.678901Z",'
    '"orderId":"","outcome":"APPROVED","policyVersion":"","reason":"naïve ✓",'
    '"recordedAt":"2030-01-02T03:04:05.700000Z","requestId":"req_0001","sequence":1,'
    '"sessionId":"","source":"risk","tenantId":"t1","traceId":"","type":"risk.decision",'
    '"userId":""}'
).encode()


def test_canonical_event_is_the_documented_form() -> None:
    assert CONTENT.canonical() == EXPECTED_CANONICAL
    expected = hashlib.sha256(b"0" * 64 + EXPECTED_CANONICAL).hexdigest()
    assert link_hash(GENESIS_HASH, CONTENT) == expected
    # The docstring lists the same keys an outside verifier must use.
    for key in CONTENT.canonical_fields():
        assert key in (chain.__doc__ or "")


def test_hash_covers_every_field_but_not_the_chain_or_position() -> None:
    keys = set(CONTENT.canonical_fields())
    assert len(keys) == 19
    assert not keys & {"position", "prevHash", "hash"}
    base = link_hash(GENESIS_HASH, CONTENT)
    for f in dataclasses.fields(EventContent):
        if f.name == "sequence":
            changed = dataclasses.replace(CONTENT, sequence=2)
        elif f.name == "data":
            changed = dataclasses.replace(CONTENT, data={**CONTENT.data, "limit": 6})
        else:
            changed = dataclasses.replace(CONTENT, **{f.name: getattr(CONTENT, f.name) + "x"})
        assert link_hash(GENESIS_HASH, changed) != base, f.name
    assert link_hash("1" * 64, CONTENT) != base


def test_hashing_is_deterministic() -> None:
    reordered = dataclasses.replace(
        CONTENT, data={"ratio": 0.25, "a": {"y": True, "z": None}, "limit": 5, "b": [1, "x"]}
    )
    assert link_hash(GENESIS_HASH, reordered) == link_hash(GENESIS_HASH, CONTENT)
    assert len({link_hash(GENESIS_HASH, CONTENT) for _ in range(3)}) == 1
    # List order is content, unlike key order.
    swapped = dataclasses.replace(CONTENT, data={**CONTENT.data, "b": ["x", 1]})
    assert link_hash(GENESIS_HASH, swapped) != link_hash(GENESIS_HASH, CONTENT)


def test_timestamps_are_fixed_width_utc_and_sort_as_text() -> None:
    moments = [
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2030, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
        datetime(2030, 1, 2, 5, 4, 5, 2, tzinfo=timezone(timedelta(hours=2))),
        datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    texts = [format_timestamp(m) for m in moments]
    assert texts[0] == "0999-01-01T00:00:00.000000Z"
    assert texts[1] == "2030-01-02T03:04:05.000000Z"
    assert texts[3] == "2030-01-02T03:04:05.000002Z"  # converted to UTC
    assert {len(t) for t in texts} == {27}
    assert sorted(texts) == texts
    assert [parse_timestamp(t) for t in texts] == moments
    with pytest.raises(ValueError):
        format_timestamp(datetime(2030, 1, 1))  # naive: refused


def test_query_bounds_round_up_to_the_stored_precision() -> None:
    assert format_timestamp(ceil_to_microsecond(0, 0)) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(ceil_to_microsecond(0, 1_000)) == "1970-01-01T00:00:00.000001Z"
    assert format_timestamp(ceil_to_microsecond(0, 1_001)) == "1970-01-01T00:00:00.000002Z"
    assert format_timestamp(ceil_to_microsecond(0, 999_999_999)) == "1970-01-01T00:00:01.000000Z"


def build_chain(n: int) -> list[tuple[EventContent, str, str]]:
    out: list[tuple[EventContent, str, str]] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        content = dataclasses.replace(CONTENT, sequence=seq, event_id=f"evt_{seq:08d}")
        digest = link_hash(prev, content)
        out.append((content, prev, digest))
        prev = digest
    return out


def run(events: list[tuple[EventContent, str, str]], head: tuple[int, str]) -> ChainChecker:
    checker = ChainChecker()
    for content, prev, digest in events:
        if not checker.check(content, prev, digest):
            break
    checker.check_head(*head)
    return checker


def test_checker_accepts_an_intact_chain_and_an_empty_one() -> None:
    events = build_chain(5)
    checker = run(events, (5, events[-1][2]))
    assert checker.problem is None and checker.checked == 5
    empty = run([], (0, GENESIS_HASH))
    assert empty.problem is None and empty.checked == 0


def test_checker_names_the_first_broken_link() -> None:
    events = build_chain(5)
    head = (5, events[-1][2])

    altered = list(events)
    content, prev, digest = altered[2]
    altered[2] = (dataclasses.replace(content, outcome="BLOCKED"), prev, digest)
    checker = run(altered, head)
    assert checker.problem == chain.ChainProblem(
        3, "sequence 3: stored hash does not match its content"
    )
    assert checker.checked == 2

    relinked = list(events)
    content, _, digest = relinked[3]
    relinked[3] = (content, "f" * 64, digest)
    assert run(relinked, head).problem == chain.ChainProblem(
        4, "sequence 4: prev_hash does not match the hash of sequence 3"
    )

    gap = events[:1] + events[2:]
    assert run(gap, head).problem == chain.ChainProblem(
        2, "sequence 2: missing (the next stored event is 3)"
    )

    bad_genesis = [(events[0][0], "1" * 64, events[0][2]), *events[1:]]
    assert run(bad_genesis, head).problem == chain.ChainProblem(
        1, "sequence 1: prev_hash is not the genesis hash"
    )


def test_checker_compares_the_chain_head() -> None:
    events = build_chain(3)
    truncated = run(events[:2], (3, events[-1][2]))
    assert truncated.problem == chain.ChainProblem(
        3, "sequence 3: missing (the chain head is at sequence 3)"
    )
    beyond = run(events, (2, events[1][2]))
    assert beyond.problem is not None and beyond.problem.sequence == 3
    wrong_hash = run(events, (3, "0" * 64))
    assert wrong_hash.problem == chain.ChainProblem(
        3, "chain head: hash does not match the hash of sequence 3"
    )
