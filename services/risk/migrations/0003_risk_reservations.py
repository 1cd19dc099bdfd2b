"""Risk reservations: one row per order, the positions ledger, claimed enforcement.

risk_orders replaces risk_order_rate: the order-rate window counts the approved orders'
rows. Rows of risk_order_rate are carried over as finished orders (they still count in the
window and reserve nothing).

Revision ID: risk0003
Revises: risk0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "risk0003"
down_revision = "risk0002"
branch_labels = None
depends_on = None

order_rate = sa.table(
    "risk_order_rate",
    sa.column("tenant_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("order_id", sa.String),
    sa.column("at", sa.DateTime(timezone=True)),
)
orders = sa.table(
    "risk_orders",
    sa.column("tenant_id", sa.String),
    sa.column("order_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("deployment_id", sa.String),
    sa.column("instrument", sa.String),
    sa.column("side", sa.String),
    sa.column("quantity", sa.String),
    sa.column("price", sa.String),
    sa.column("filled_quantity", sa.String),
    sa.column("decision_id", sa.String),
    sa.column("outcome", sa.String),
    sa.column("policy_version", sa.String),
    sa.column("state", sa.String),
    sa.column("decided_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "risk_orders",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(32), nullable=False),
        # "buy" or "sell"; "" for an order risk could not read.
        sa.Column("side", sa.String(4), nullable=False),
        # Decimals as text: exact, whatever the backend.
        sa.Column("quantity", sa.String(48), nullable=False),
        # What one unit was valued at: the limit price, or the mark for market orders.
        sa.Column("price", sa.String(48), nullable=False),
        sa.Column("filled_quantity", sa.String(48), nullable=False),
        # The decision that stands for the order; earlier ones were voided.
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        # open (reserves its unfilled quantity), closed, not_executed or refused.
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("risk_orders_by_account", "risk_orders", ["tenant_id", "account_id", "state"])
    op.create_index("risk_orders_window", "risk_orders", ["tenant_id", "account_id", "decided_at"])
    op.create_index("risk_orders_unsettled", "risk_orders", ["state", "updated_at"])
    op.create_table(
        "risk_positions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("deployment_id", sa.String(64), primary_key=True),
        sa.Column("instrument", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(48), nullable=False),
        # The price the newest snapshot carried; "" when it carried none.
        sa.Column("price", sa.String(48), nullable=False),
        # Execution's counter for the position; only a higher one replaces the row.
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "risk_positions_by_account", "risk_positions", ["tenant_id", "account_id", "instrument"]
    )
    _carry_over_order_rate()
    op.drop_index("risk_order_rate_window", table_name="risk_order_rate")
    op.drop_table("risk_order_rate")

    with op.batch_alter_table("risk_kill_switches") as batch:
        # Which risk process is calling execution for the current engagement, and until when.
        batch.add_column(
            sa.Column("enforcement_owner", sa.String(128), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("enforcement_lease_until", sa.DateTime(timezone=True), nullable=True)
        )
        # Names every order execution cancelled or placed, however many.
        batch.alter_column(
            "enforcement_detail",
            existing_type=sa.String(500),
            type_=sa.Text,
            existing_nullable=False,
            existing_server_default="",
        )


def _carry_over_order_rate() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            order_rate.c.tenant_id, order_rate.c.account_id, order_rate.c.order_id, order_rate.c.at
        ).order_by(order_rate.c.at)
    ).all()
    latest: dict[tuple[str, str], tuple[str, object]] = {}
    for number, (tenant_id, account_id, order_id, at) in enumerate(rows):
        # An order without an id still counted in its window: give it one of its own.
        key = (tenant_id, order_id or f"rate-{number}")
        latest[key] = (account_id, at)
    if latest:
        conn.execute(
            sa.insert(orders),
            [
                {
                    "tenant_id": tenant_id,
                    "order_id": order_id,
                    "account_id": account_id,
                    "deployment_id": "",
                    "instrument": "",
                    "side": "",
                    "quantity": "0",
                    "price": "",
                    "filled_quantity": "0",
                    "decision_id": "",
                    "outcome": "APPROVED",
                    "policy_version": "",
                    "state": "closed",
                    "decided_at": at,
                    "updated_at": at,
                }
                for (tenant_id, order_id), (account_id, at) in latest.items()
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_kill_switches") as batch:
        batch.drop_column("enforcement_lease_until")
        batch.drop_column("enforcement_owner")
    op.execute(
        "UPDATE risk_kill_switches SET enforcement_detail = substr(enforcement_detail, 1, 500)"
    )
    with op.batch_alter_table("risk_kill_switches") as batch:
        batch.alter_column(
            "enforcement_detail",
            existing_type=sa.Text,
            type_=sa.String(500),
            existing_nullable=False,
            existing_server_default="",
        )
    op.create_table(
        "risk_order_rate",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("risk_order_rate_window", "risk_order_rate", ["tenant_id", "account_id", "at"])
    op.execute(
        "INSERT INTO risk_order_rate (tenant_id, account_id, order_id, at) "
        "SELECT tenant_id, account_id, order_id, decided_at FROM risk_orders "
        "WHERE state IN ('open', 'closed')"
    )
    op.drop_table("risk_positions")
    op.drop_table("risk_orders")
