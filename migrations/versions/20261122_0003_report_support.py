"""webhook tallies (duplicates, rejections) and indexes for reports

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_tallies",
        sa.Column("minute", UTC_TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "outcome", name=op.f("pk_webhook_tallies")),
    )
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        # Superseded by the covering index, which starts with `at` too.
        batch_op.drop_index("ix_instance_events_at")
        batch_op.create_index(
            "ix_instance_events_at_covering",
            ["at", "source", "from_status", "to_status", "instance_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_instance_events_instance_id_to_status_at",
            ["instance_id", "to_status", "at"],
            unique=False,
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_status_created_at_delivered_at",
            ["status", "created_at", "delivered_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_created_at_delivered_at")
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_events_instance_id_to_status_at")
        batch_op.drop_index("ix_instance_events_at_covering")
        batch_op.create_index("ix_instance_events_at", ["at"], unique=False)
    op.drop_table("webhook_tallies")
