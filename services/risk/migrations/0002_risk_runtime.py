"""Risk runtime: kill-switch enforcement, equity/drawdown tracking, the order-rate window.

Revision ID: risk0002
Revises: risk0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "risk0002"
down_revision = "risk0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("risk_kill_switches") as batch:
        batch.add_column(
            sa.Column("flatten", sa.Boolean, nullable=False, server_default=sa.false())
        )
        # Numbers engagements, so an enforcement result lands on the engagement it was for.
        batch.add_column(sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("enforcement", sa.String(16), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("enforcement_detail", sa.String(500), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("enforced_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("risk_kill_switches_engaged", "risk_kill_switches", ["engaged", "enforcement"])
    op.create_table(
        "risk_equity",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        # "deployment", "account" or "tenant".
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_id", sa.String(64), primary_key=True),
        # For deployment rows: the account whose sum they are part of.
        sa.Column("account_id", sa.String(64), nullable=False),
        # Decimals as text: exact, whatever the backend.
        sa.Column("capital", sa.String(48), nullable=False),
        sa.Column("equity", sa.String(48), nullable=False),
        sa.Column("peak_equity", sa.String(48), nullable=False),
        sa.Column("breaches", sa.Integer, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        # For deployment rows: the UTC day of the last report and the equity it started at.
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("day_start_equity", sa.String(48), nullable=False),
    )
    op.create_index("risk_equity_by_account", "risk_equity", ["tenant_id", "scope", "account_id"])
    op.create_table(
        "risk_order_rate",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("risk_order_rate_window", "risk_order_rate", ["tenant_id", "account_id", "at"])


def downgrade() -> None:
    op.drop_table("risk_order_rate")
    op.drop_table("risk_equity")
    op.drop_index("risk_kill_switches_engaged", table_name="risk_kill_switches")
    with op.batch_alter_table("risk_kill_switches") as batch:
        for column in (
            "enforced_at",
            "enforcement_detail",
            "enforcement",
            "request_id",
            "generation",
            "flatten",
        ):
            batch.drop_column(column)
