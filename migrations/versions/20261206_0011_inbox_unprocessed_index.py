"""the inbox's unprocessed webhooks in a partial index of their ids

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNPROCESSED = sa.text("processed_at IS NULL")


def upgrade() -> None:
    # Rows are not touched: which are unprocessed is still `processed_at IS NULL`.
    op.create_index(
        "ix_inbound_webhooks_unprocessed",
        "inbound_webhooks",
        ["id"],
        unique=False,
        postgresql_where=UNPROCESSED,
        sqlite_where=UNPROCESSED,
    )
    op.drop_index(op.f("ix_inbound_webhooks_processed_at_id"), table_name="inbound_webhooks")


def downgrade() -> None:
    op.create_index(
        op.f("ix_inbound_webhooks_processed_at_id"),
        "inbound_webhooks",
        ["processed_at", "id"],
        unique=False,
    )
    op.drop_index("ix_inbound_webhooks_unprocessed", table_name="inbound_webhooks")
