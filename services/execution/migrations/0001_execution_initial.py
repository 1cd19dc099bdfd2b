"""Deployments, orders, paper-venue marks and the execution outbox.

Revision ID: exec0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.runtime import outbox

revision = "exec0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_deployments",
        sa.Column("deployment_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("strategy_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("instruments", sa.Text, nullable=False),
        sa.Column("capital_allocation", sa.String(40), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("degraded", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_execution_deployments_tenant", "execution_deployments", ["tenant_id", "deployment_id"]
    )
    op.create_table(
        "execution_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("quantity", sa.String(40), nullable=False),
        sa.Column("limit_price", sa.String(40), nullable=False),
        sa.Column("filled_quantity", sa.String(40), nullable=False),
        sa.Column("average_fill_price", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reduce_only", sa.Boolean, nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("reject_reason", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_execution_orders_tenant", "execution_orders", ["tenant_id", "order_id"])
    op.create_index(
        "ix_execution_orders_deployment", "execution_orders", ["tenant_id", "deployment_id"]
    )
    op.create_table(
        "execution_marks",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("instrument", sa.String(32), primary_key=True),
        sa.Column("price", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    outbox.create_table("execution")


def downgrade() -> None:
    op.drop_table(outbox.table_name("execution"))
    op.drop_table("execution_marks")
    op.drop_table("execution_orders")
    op.drop_table("execution_deployments")
