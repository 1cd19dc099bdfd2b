"""Audit storage: the tables (created by migrations/) and every SQL operation on them.

Appends run as one group-committed write op per RPC: lock the tenant's chain head, drop ids
already stored, assign sequences, insert, move the head. Every read is scoped by tenant
except Subscribe's internal all-tenants stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from services.audit.chain import GENESIS_HASH, ChainChecker, format_timestamp, link_hash
from services.runtime import errors
from services.runtime.auditfields import (
    FIELDS,
    TIMESTAMP_WIDTH,
    AuditField,
    EventContent,
    Kind,
)
from services.runtime.canonical import canonical_json
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow

VERIFY_PAGE = 1000

# PostgreSQL: every append takes this transaction lock first, so appends from several audit
# processes commit one after another and positions become visible in increasing order; a
# Subscribe cursor (position > n) then never skips an event that commits late.
APPEND_LOCK_KEY = "gate4-audit-append"

metadata = sa.MetaData()


def _column(f: AuditField) -> sa.Column[Any]:
    """The column a content field is stored in (as the migrations created it)."""
    type_: sa.types.TypeEngine[Any]
    if f.kind is Kind.SEQUENCE:
        type_ = sa.BigInteger()
    elif f.kind is Kind.TIMESTAMP:
        type_ = sa.String(TIMESTAMP_WIDTH)
    elif f.kind is Kind.TEXT:
        type_ = sa.String(f.max_length)
    else:  # long text, and JSON kept as its canonical text
        type_ = sa.Text()
    return sa.Column(f.name, type_, nullable=False)


events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=True),
    *(_column(f) for f in FIELDS),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

chain_heads = sa.Table(
    "audit_chain_heads",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

MAX_DATA_BYTES = 64 * 1024

# Query filters that are plain equality on a column.
EQUALITY_FILTERS = (
    "request_id",
    "deployment_id",
    "order_id",
    "session_id",
    "account_id",
    "outcome",
    "type",
)


@dataclass(frozen=True)
class StoredEvent:
    position: int
    content: EventContent
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Appended:
    event: StoredEvent
    duplicate: bool


@dataclass(frozen=True)
class QueryFilters:
    equals: dict[str, str]
    since: str = ""  # inclusive, formatted like occurred_at
    until: str = ""  # exclusive


@dataclass(frozen=True)
class VerifyReport:
    tenant_id: str
    valid: bool
    checked_events: int
    head_sequence: int
    head_hash: str
    first_bad_sequence: int = 0
    problem: str = ""


def _stored(row: Row[Any]) -> StoredEvent:
    m = row._mapping
    content = EventContent(
        **{f.name: json.loads(m[f.name]) if f.kind is Kind.JSON else m[f.name] for f in FIELDS}
    )
    return StoredEvent(
        position=int(m["position"]), content=content, prev_hash=m["prev_hash"], hash=m["hash"]
    )


def _row(content: EventContent, prev_hash: str, hash_: str) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: getattr(content, f.name) for f in FIELDS}
    row["data"] = canonical_json(content.data).decode("utf-8")
    row["prev_hash"] = prev_hash
    row["hash"] = hash_
    return row


def _lock_head(conn: Connection, tenant_id: str) -> tuple[int, str]:
    """The tenant's chain head, locked until commit (FOR UPDATE; SQLite's write lock is global)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": APPEND_LOCK_KEY})
    # Create the row first so there is always a row to lock, even for a tenant's first event.
    conn.execute(
        sa.text(
            "INSERT INTO audit_chain_heads (tenant_id, sequence, hash) VALUES (:t, 0, :h) "
            "ON CONFLICT (tenant_id) DO NOTHING"
        ),
        {"t": tenant_id, "h": GENESIS_HASH},
    )
    head = conn.execute(
        sa.select(chain_heads.c.sequence, chain_heads.c.hash)
        .where(chain_heads.c.tenant_id == tenant_id)
        .with_for_update()
    ).one()
    return int(head.sequence), str(head.hash)


def append_op(conn: Connection, tenant_id: str, drafts: Sequence[EventContent]) -> list[Appended]:
    """Appends drafts (sequence and recorded_at unset) to the tenant's chain, in one transaction.

    An event id already stored (or repeated in this batch) yields the stored event, marked
    duplicate; an id stored under another tenant is refused.
    """
    sequence, last_hash = _lock_head(conn, tenant_id)
    ids = list(dict.fromkeys(d.event_id for d in drafts))
    # Read after taking the lock, so a concurrent append of the same id is seen here.
    existing = {
        s.content.event_id: s
        for s in map(_stored, conn.execute(sa.select(events).where(events.c.event_id.in_(ids))))
    }
    for found in existing.values():
        if found.content.tenant_id != tenant_id:
            # Never answer with (or confirm details of) another tenant's event.
            raise errors.StateConflict(f"event_id {found.content.event_id} is already in use")

    recorded_at = format_timestamp(utcnow())
    inserted: dict[str, tuple[EventContent, str, str]] = {}
    for draft in drafts:
        if draft.event_id in existing or draft.event_id in inserted:
            continue
        sequence += 1
        content = replace(draft, tenant_id=tenant_id, sequence=sequence, recorded_at=recorded_at)
        hash_ = link_hash(last_hash, content)
        inserted[draft.event_id] = (content, last_hash, hash_)
        last_hash = hash_

    stored = dict(existing)
    if inserted:
        positions = conn.execute(
            sa.insert(events).returning(events.c.position, sort_by_parameter_order=True),
            [_row(*values) for values in inserted.values()],
        ).scalars()
        for (content, prev, hash_), position in zip(inserted.values(), positions, strict=True):
            stored[content.event_id] = StoredEvent(int(position), content, prev, hash_)
        conn.execute(
            sa.update(chain_heads)
            .where(chain_heads.c.tenant_id == tenant_id)
            .values(sequence=sequence, hash=last_hash)
        )

    result: list[Appended] = []
    first_time = set(inserted)
    for draft in drafts:
        # The first occurrence of a new id is the insert; any later one is its duplicate.
        duplicate = draft.event_id not in first_time
        first_time.discard(draft.event_id)
        result.append(Appended(stored[draft.event_id], duplicate))
    return result


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, tenant_id: str, drafts: Sequence[EventContent]) -> list[Appended]:
        return await self.db.write(lambda conn: append_op(conn, tenant_id, drafts))

    async def query(
        self, tenant_id: str, filters: QueryFilters, after_position: int, limit: int
    ) -> list[StoredEvent]:
        stmt = sa.select(events).where(
            events.c.tenant_id == tenant_id, events.c.position > after_position
        )
        for name, value in filters.equals.items():
            stmt = stmt.where(events.c[name] == value)
        if filters.since:
            stmt = stmt.where(events.c.occurred_at >= filters.since)
        if filters.until:
            stmt = stmt.where(events.c.occurred_at < filters.until)
        stmt = stmt.order_by(events.c.position).limit(limit)
        return await self.db.read(lambda conn: [_stored(r) for r in conn.execute(stmt)])

    async def events_after(
        self, tenant_id: str | None, after_position: int, types: Sequence[str], limit: int
    ) -> list[StoredEvent]:
        """Events past a position, for Subscribe; tenant_id None means every tenant."""
        stmt = sa.select(events).where(events.c.position > after_position)
        if tenant_id is not None:
            stmt = stmt.where(events.c.tenant_id == tenant_id)
        if types:
            stmt = stmt.where(events.c.type.in_(list(types)))
        stmt = stmt.order_by(events.c.position).limit(limit)
        return await self.db.read(lambda conn: [_stored(r) for r in conn.execute(stmt)])

    async def verify(self, tenant_id: str) -> VerifyReport:
        """Recomputes the tenant's chain page by page, up to its first broken link."""
        head_sequence, head_hash, bound = await self.db.read(lambda c: _head_snapshot(c, tenant_id))
        checker = ChainChecker()
        after = -(2**62)  # below any sequence, so a tampered 0 or negative one is seen too
        while after < bound and checker.problem is None:
            page = await self.db.read(
                partial(_chain_page, tenant_id=tenant_id, after=after, bound=bound)
            )
            if not page:
                break
            for stored in page:
                if not checker.check(stored.content, stored.prev_hash, stored.hash):
                    break
            after = page[-1].content.sequence
        checker.check_head(head_sequence, head_hash)
        problem = checker.problem
        return VerifyReport(
            tenant_id=tenant_id,
            valid=problem is None,
            checked_events=checker.checked,
            head_sequence=head_sequence,
            head_hash=head_hash,
            first_bad_sequence=problem.sequence if problem else 0,
            problem=problem.problem if problem else "",
        )


def _head_snapshot(conn: Connection, tenant_id: str) -> tuple[int, str, int]:
    """Head sequence and hash plus the highest stored sequence, read in one statement.

    One statement sees one snapshot on both backends, so head and events agree; events
    appended after it lie beyond the returned bound and are left for the next Verify.
    """
    head = chain_heads.c.tenant_id == tenant_id
    row = conn.execute(
        sa.select(
            sa.select(chain_heads.c.sequence).where(head).scalar_subquery(),
            sa.select(chain_heads.c.hash).where(head).scalar_subquery(),
            sa.select(sa.func.max(events.c.sequence))
            .where(events.c.tenant_id == tenant_id)
            .scalar_subquery(),
        )
    ).one()
    head_sequence = int(row[0]) if row[0] is not None else 0
    head_hash = str(row[1]) if row[1] is not None else GENESIS_HASH
    bound = max(head_sequence, int(row[2]) if row[2] is not None else 0)
    return head_sequence, head_hash, bound


def _chain_page(conn: Connection, *, tenant_id: str, after: int, bound: int) -> list[StoredEvent]:
    stmt = (
        sa.select(events)
        .where(
            events.c.tenant_id == tenant_id,
            events.c.sequence > after,
            events.c.sequence <= bound,
        )
        .order_by(events.c.sequence)
        .limit(VERIFY_PAGE)
    )
    return [_stored(r) for r in conn.execute(stmt)]
