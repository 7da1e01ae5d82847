"""the built-in simulator's world, kept across restarts of `serve --simulator`

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
UTC_TIMESTAMP = sa.DateTime(timezone=True)
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "simulator_world",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("saved_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("world", JSON_TYPE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simulator_world")),
    )


def downgrade() -> None:
    op.drop_table("simulator_world")
