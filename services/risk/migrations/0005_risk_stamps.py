"""Stamps: one row per tenant and per account, rewritten by every write of the state risk
decisions read, so a process knows whether the state it holds in memory is current
(services/risk/stamps.py). No rows to carry over: a missing stamp loads from the tables.

Revision ID: risk0005
Revises: risk0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "risk0005"
down_revision = "risk0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_stamps",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        # "" for the tenant's own stamp (policies, kill switches).
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("risk_stamps")
