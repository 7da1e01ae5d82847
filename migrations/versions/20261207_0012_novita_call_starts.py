"""the Novita requests started in the last minute, one rate limit for every process

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "novita_call_starts",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_novita_call_starts")),
    )
    op.create_index(
        op.f("ix_novita_call_starts_started_at"),
        "novita_call_starts",
        ["started_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_novita_call_starts_started_at"), table_name="novita_call_starts")
    op.drop_table("novita_call_starts")
