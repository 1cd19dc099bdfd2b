"""The command layer: idempotency keys, fills, positions, the paper venue's book, leases.

Revision ID: exec0002
Revises: exec0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "exec0002"
down_revision = "exec0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_idempotency",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("route", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        # in_progress, completed
        sa.Column("status", sa.String(16), nullable=False),
        # Fencing token of the attempt that holds the key while it is in progress.
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        # The order or deployment the command creates, assigned when the key is claimed.
        sa.Column("resource_id", sa.String(64), nullable=False),
        # "reply" (serialized proto in response) or "error" (code, detail, outcome).
        sa.Column("result_kind", sa.String(8), nullable=False, server_default=""),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("error_detail", sa.Text, nullable=False, server_default=""),
        sa.Column("error_outcome", sa.String(64), nullable=False, server_default=""),
        sa.Column("request_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_execution_idempotency_expiry", "execution_idempotency", ["expires_at"])

    op.create_table(
        "execution_fills",
        sa.Column("fill_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity", sa.String(40), nullable=False),
        sa.Column("price", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_execution_fills_order", "execution_fills", ["tenant_id", "order_id"])

    op.create_table(
        "execution_positions",
        sa.Column("deployment_id", sa.String(64), primary_key=True),
        sa.Column("instrument", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(40), nullable=False),
        sa.Column("average_price", sa.String(40), nullable=False),
        sa.Column("realized_pnl", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_execution_positions_account",
        "execution_positions",
        ["tenant_id", "account_id", "instrument"],
    )

    # The paper venue's own book: what the venue knows, by client order id. Written in its
    # own transactions, like an external venue, so reconciliation has something to ask.
    op.create_table(
        "execution_paper_venue_orders",
        sa.Column("client_order_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("quantity", sa.String(40), nullable=False),
        sa.Column("limit_price", sa.String(40), nullable=False),
        # open, filled, cancelled, rejected
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filled_quantity", sa.String(40), nullable=False),
        sa.Column("fills", sa.Text, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_execution_paper_venue_resting",
        "execution_paper_venue_orders",
        ["tenant_id", "instrument", "status"],
    )

    with op.batch_alter_table("execution_deployments") as batch:
        batch.add_column(sa.Column("peak_equity", sa.String(40), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("degraded_reason", sa.String(500), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("state_reason", sa.String(500), nullable=False, server_default="")
        )
        # A stop in progress: whether it flattens, and until when its process holds it.
        batch.add_column(
            sa.Column("stop_flatten", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("stop_lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stop_count", sa.Integer, nullable=False, server_default="0"))
        # The last kill switch enforced here, shown when risk cannot be asked.
        batch.add_column(
            sa.Column("enforced_switch", sa.String(200), nullable=False, server_default="")
        )

    with op.batch_alter_table("execution_orders") as batch:
        batch.add_column(
            sa.Column("policy_version", sa.String(64), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("venue_attempts", sa.Integer, nullable=False, server_default="0")
        )
        # pending (not yet confirmed by the venue) or confirmed; pending orders hold a lease.
        batch.add_column(
            sa.Column("venue_state", sa.String(16), nullable=False, server_default="confirmed")
        )
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        # The idempotency key that created the order, completed when the order settles.
        batch.add_column(
            sa.Column("idempotency_key", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=False, server_default=""))
    op.create_index(
        "ix_execution_orders_venue_state", "execution_orders", ["venue_state", "lease_until"]
    )


def downgrade() -> None:
    op.drop_index("ix_execution_orders_venue_state", "execution_orders")
    with op.batch_alter_table("execution_orders") as batch:
        for name in (
            "request_id",
            "idempotency_key",
            "lease_until",
            "venue_state",
            "venue_attempts",
            "policy_version",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("execution_deployments") as batch:
        for name in (
            "enforced_switch",
            "stop_count",
            "stop_lease_until",
            "stop_flatten",
            "state_reason",
            "degraded_reason",
            "peak_equity",
        ):
            batch.drop_column(name)
    op.drop_table("execution_paper_venue_orders")
    op.drop_table("execution_positions")
    op.drop_table("execution_fills")
    op.drop_table("execution_idempotency")
