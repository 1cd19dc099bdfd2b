"""Outbox claims: the event's tenant and a shipper's lease on each risk outbox row.

Rows written before this revision keep a NULL tenant and are shipped in order with every
tenant's; rows stay unclaimed until a shipper of this release claims them.

Revision ID: risk0004
Revises: risk0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from services.runtime import outbox

revision = "risk0004"
down_revision = "risk0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    outbox.add_claim_columns("risk")


def downgrade() -> None:
    outbox.drop_claim_columns("risk")
