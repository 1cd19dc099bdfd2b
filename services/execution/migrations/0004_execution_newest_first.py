"""Indexes for lists read newest first: orders and deployments by (created_at, id).

Revision ID: exec0004
Revises: exec0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "exec0004"
down_revision = "exec0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A page of a tenant's orders or deployments (optionally of one deployment or account)
    # is read by (created_at desc, id desc) from the cursor: these keep that an index scan.
    op.create_index(
        "ix_execution_orders_newest",
        "execution_orders",
        ["tenant_id", "created_at", "order_id"],
    )
    op.create_index(
        "ix_execution_deployments_newest",
        "execution_deployments",
        ["tenant_id", "created_at", "deployment_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_execution_deployments_newest", "execution_deployments")
    op.drop_index("ix_execution_orders_newest", "execution_orders")
