"""outbox attempts, redeliveries and disabled webhook targets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:56:39.273856
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "disabled_webhook_targets",
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("disabled_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("outbox_id", sa.String(length=40), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_disabled_webhook_targets")),
    )
    op.create_table(
        "outbox_attempts",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("target_url", sa.String(length=2048), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('delivered', 'failed', 'gone', 'refused')",
            name=op.f("ck_outbox_attempts_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_outbox_attempts_outbox_id_outbox")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_attempts")),
    )
    with op.batch_alter_table("outbox_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_attempts_outbox_id_id"), ["outbox_id", "id"], unique=False
        )

    op.create_table(
        "outbox_redeliveries",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.String(length=40), nullable=False),
        sa.Column("requested_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("attempts_before", sa.Integer(), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_outbox_redeliveries_outbox_id_outbox")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_redeliveries")),
    )
    with op.batch_alter_table("outbox_redeliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_redeliveries_outbox_id_id"), ["outbox_id", "id"], unique=False
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_created_at_id", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_created_at_id")

    with op.batch_alter_table("outbox_redeliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_redeliveries_outbox_id_id"))

    op.drop_table("outbox_redeliveries")
    with op.batch_alter_table("outbox_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_attempts_outbox_id_id"))

    op.drop_table("outbox_attempts")
    op.drop_table("disabled_webhook_targets")
