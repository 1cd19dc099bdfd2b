"""Conversation sessions, turns, notifications, the audit-stream cursor and the outbox.

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
        # Mirrors metadata.notificationsOptIn so the notification feed can select by it.
        sa.Column("notifications_opt_in", sa.Boolean, nullable=False),
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
    op.create_index(
        "ix_conversation_sessions_opt_in",
        "conversation_sessions",
        ["tenant_id", "notifications_opt_in"],
    )
    op.create_table(
        "conversation_turns",
        sa.Column("turn_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        # in_progress while the assistant works; completed with the stored reply.
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("session_id", "sequence", name="uq_conversation_turns_sequence"),
        sa.UniqueConstraint("session_id", "idempotency_key", name="uq_conversation_turns_key"),
    )
    op.create_table(
        "conversation_notifications",
        sa.Column("notification_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("source_event_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_turn_id", sa.String(64), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        # Exactly once per session, whatever the feed replays after a restart.
        sa.UniqueConstraint(
            "session_id", "source_event_id", name="uq_conversation_notifications_event"
        ),
    )
    op.create_index(
        "ix_conversation_notifications_pending",
        "conversation_notifications",
        ["session_id", "delivered_turn_id"],
    )
    op.create_table(
        "conversation_feed_cursor",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    outbox.create_table("conversation")


def downgrade() -> None:
    op.drop_table(outbox.table_name("conversation"))
    op.drop_table("conversation_feed_cursor")
    op.drop_table("conversation_notifications")
    op.drop_table("conversation_turns")
    op.drop_table("conversation_sessions")
