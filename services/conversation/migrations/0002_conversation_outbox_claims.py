"""Outbox claims: the event's tenant and a shipper's lease on each conversation outbox row.

Rows written before this revision keep a NULL tenant and are shipped in order with every
tenant's; rows stay unclaimed until a shipper of this release claims them.

Revision ID: conv0002
Revises: conv0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from services.runtime import outbox

revision = "conv0002"
down_revision = "conv0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    outbox.add_claim_columns("conversation")


def downgrade() -> None:
    outbox.drop_claim_columns("conversation")
