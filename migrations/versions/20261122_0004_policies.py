"""idle auto-stop and spot-interruption recovery: policy claims, recovery state, replacements

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
UTC_TIMESTAMP = sa.DateTime(timezone=True)
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_LINKS = ("replaces_instance_id", "replaced_by_instance_id")


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("interruption_policy", JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column("policy_claim_owner", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("policy_claim_expires_at", UTC_TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("idle_noted_at", UTC_TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("recovery_attempts", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recovery_started_at", UTC_TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("recovery_next_at", UTC_TIMESTAMP, nullable=True))
        for column in _LINKS:
            batch_op.add_column(sa.Column(column, sa.String(length=40), nullable=True))
            batch_op.create_foreign_key(
                op.f(f"fk_instances_{column}_instances"), "instances", [column], ["id"]
            )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        for column in reversed(_LINKS):
            batch_op.drop_constraint(op.f(f"fk_instances_{column}_instances"), type_="foreignkey")
            batch_op.drop_column(column)
        batch_op.drop_column("recovery_next_at")
        batch_op.drop_column("recovery_started_at")
        batch_op.drop_column("recovery_attempts")
        batch_op.drop_column("idle_noted_at")
        batch_op.drop_column("policy_claim_expires_at")
        batch_op.drop_column("policy_claim_owner")
        batch_op.drop_column("interruption_policy")
