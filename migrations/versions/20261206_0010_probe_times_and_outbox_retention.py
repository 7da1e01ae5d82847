"""next readiness probe kept on the row; an index for pruning settled notifications

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("next_probe_at", UTC_TIMESTAMP, nullable=True))
    op.create_index(
        op.f("ix_outbox_status_updated_at"), "outbox", ["status", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_status_updated_at"), table_name="outbox")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("next_probe_at")
