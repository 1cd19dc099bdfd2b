"""API key life cycle: keys may expire (a rotated key's grace period) and name their successor.

Revision ID: gw0002
Revises: gw0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "gw0002"
down_revision = "gw0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_api_keys") as batch:
        # Refused from this instant on; NULL = until revoked.
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        # The key that replaced this one in a rotation.
        batch.add_column(sa.Column("replaced_by", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_api_keys") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("expires_at")
