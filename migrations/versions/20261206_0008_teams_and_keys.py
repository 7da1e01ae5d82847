"""teams and roles: instances.team, and API keys kept (hashed) in the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Every instance that exists today belongs to the default team (admins see it).
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("team", sa.String(length=64), server_default="default", nullable=False)
        )
    op.create_index(
        op.f("ix_instances_team_created_at_id"),
        "instances",
        ["team", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_used_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("revoked_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'admin')", name=op.f("ck_api_keys_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
    )
    op.create_index(op.f("ix_api_keys_team"), "api_keys", ["team"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_keys_team"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_instances_team_created_at_id"), table_name="instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("team")
