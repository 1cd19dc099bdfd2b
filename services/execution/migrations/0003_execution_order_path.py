"""The order path as one unit of work: position versions and each order's risk decision.

Revision ID: exec0003
Revises: exec0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "exec0003"
down_revision = "exec0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_positions") as batch:
        # One more on every change of the quantity: risk keeps the newest version it has
        # seen of each position, so a stale snapshot never moves its exposure ledger back.
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("execution_orders") as batch:
        # The risk decision the order was placed under, named in what risk is told about it.
        batch.add_column(sa.Column("decision_id", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("execution_orders") as batch:
        batch.drop_column("decision_id")
    with op.batch_alter_table("execution_positions") as batch:
        batch.drop_column("version")
