"""The `traffic` marker column on every table (live or shadow, from the request context).

A row that dyed traffic wrote into a live table says so, and `make shadow-audit` finds it.
Rows written before this revision are live.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("customer_order", "order_item", "idempotency_record")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("traffic", sa.String(8), nullable=False, server_default="live")
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("traffic")
