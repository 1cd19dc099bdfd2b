"""Outbox claims: the event's tenant and a shipper's lease on each execution outbox row.

Rows written before this revision keep a NULL tenant and are shipped in order with every
tenant's; rows stay unclaimed until a shipper of this release claims them.

Revision ID: exec0005
Revises: exec0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from services.runtime import outbox

revision = "exec0005"
down_revision = "exec0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    outbox.add_claim_columns("execution")


def downgrade() -> None:
    outbox.drop_claim_columns("execution")
