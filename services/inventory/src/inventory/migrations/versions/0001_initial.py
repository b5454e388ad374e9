"""Initial schema: product, reservation, reservation_item.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables (portable DDL: SQLite and PostgreSQL)."""
    op.create_table(
        "product",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reserved", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("stock >= 0", name="ck_product_stock_nonnegative"),
        sa.CheckConstraint("reserved >= 0", name="ck_product_reserved_nonnegative"),
        sa.CheckConstraint("reserved <= stock", name="ck_product_reserved_within_stock"),
        sa.CheckConstraint("price_cents >= 0", name="ck_product_price_nonnegative"),
    )
    op.create_table(
        "reservation",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("order_id", name="uq_reservation_order_id"),
        sa.CheckConstraint(
            "status IN ('held', 'committed', 'released', 'expired')", name="ck_reservation_status"
        ),
    )
    op.create_index("ix_reservation_status_expires_at", "reservation", ["status", "expires_at"])
    op.create_table(
        "reservation_item",
        sa.Column(
            "reservation_id",
            sa.String(36),
            sa.ForeignKey(
                "reservation.id", ondelete="CASCADE", name="fk_reservation_item_reservation"
            ),
            primary_key=True,
        ),
        sa.Column(
            "sku",
            sa.String(64),
            sa.ForeignKey("product.sku", name="fk_reservation_item_product"),
            primary_key=True,
        ),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_reservation_item_quantity"),
    )


def downgrade() -> None:
    """Drop the tables in dependency order."""
    op.drop_table("reservation_item")
    op.drop_index("ix_reservation_status_expires_at", table_name="reservation")
    op.drop_table("reservation")
    op.drop_table("product")
