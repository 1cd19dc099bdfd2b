"""Conversation sessions and the conversation outbox.

Revision ID: conv0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.runtime import outbox

revision = "conv0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("turn_count", sa.Integer, nullable=False),
        sa.Column("memory_version", sa.Integer, nullable=False),
        sa.Column("memory", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_conversation_sessions_tenant", "conversation_sessions", ["tenant_id", "session_id"]
    )
    outbox.create_table("conversation")


def downgrade() -> None:
    op.drop_table(outbox.table_name("conversation"))
    op.drop_table("conversation_sessions")
