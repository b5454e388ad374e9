"""Orders, order items and idempotency records.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_order",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("saga_state", sa.String(16), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reservation_id", sa.String(64), nullable=True),
        sa.Column("charge_id", sa.String(64), nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_order_customer_id", "customer_order", ["customer_id"])
    op.create_index("ix_customer_order_saga_state", "customer_order", ["saga_state"])
    op.create_table(
        "order_item",
        sa.Column(
            "order_id",
            sa.String(36),
            sa.ForeignKey("customer_order.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "idempotency_record",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_record_order_id", "idempotency_record", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_record_order_id", table_name="idempotency_record")
    op.drop_table("idempotency_record")
    op.drop_table("order_item")
    op.drop_index("ix_customer_order_saga_state", table_name="customer_order")
    op.drop_index("ix_customer_order_customer_id", table_name="customer_order")
    op.drop_table("customer_order")
