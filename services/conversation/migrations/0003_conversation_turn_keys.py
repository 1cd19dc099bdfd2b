"""Turn keys get a lease and a lifetime, as every idempotency key (services/runtime/idempotency.py).

A running turn holds its session and its key until `lease_until`; a completed turn's key is
kept until `expires_at`. Both are nullable, so a previous release still running during the
upgrade (which writes neither) keeps working: a turn without a lifetime keeps its key for
good, as before, and one without a lease holds its session for the lease from its claim
(services/conversation/turns.py). Turns running now get the lease the previous release gave
them (60 s from their claim).

Revision ID: conv0003
Revises: conv0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "conv0003"
down_revision = "conv0002"
branch_labels = None
depends_on = None

#: What the previous release let a running turn hold its session for.
PREVIOUS_LEASE = timedelta(seconds=60)


def upgrade() -> None:
    with op.batch_alter_table("conversation_turns") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    turns = sa.table(
        "conversation_turns",
        sa.column("turn_id", sa.String),
        sa.column("status", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("lease_until", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    # At most one running turn per session: few rows, set one by one (portable arithmetic).
    running = conn.execute(
        sa.select(turns.c.turn_id, turns.c.created_at).where(turns.c.status == "in_progress")
    ).all()
    for turn_id, created_at in running:
        conn.execute(
            sa.update(turns)
            .where(turns.c.turn_id == turn_id)
            .values(lease_until=created_at + PREVIOUS_LEASE)
        )


def downgrade() -> None:
    with op.batch_alter_table("conversation_turns") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("lease_until")
