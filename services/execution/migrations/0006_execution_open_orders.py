"""An index for the open orders of an account: counted for every order risk decides.

Revision ID: exec0006
Revises: exec0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "exec0006"
down_revision = "exec0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Placing an order counts the open orders of its account and deployment; without this
    # the count reads every order the account ever placed, so it slows as history grows.
    op.create_index(
        "ix_execution_orders_open",
        "execution_orders",
        ["tenant_id", "account_id", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_execution_orders_open", "execution_orders")
