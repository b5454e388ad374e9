"""charge table

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "charge",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint(
            "customer_id", "idempotency_key", name="uq_charge_customer_id_idempotency_key"
        ),
        sa.CheckConstraint("amount_cents > 0", name="ck_charge_amount_positive"),
        sa.CheckConstraint(
            "status IN ('succeeded', 'declined', 'refunded')", name="ck_charge_status"
        ),
    )
    op.create_index("ix_charge_order_id", "charge", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_charge_order_id", table_name="charge")
    op.drop_table("charge")
