"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:38:50.984799
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same types as service/db/types.py, spelled out so this revision never changes with the code.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON_TYPE, nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("expires_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "state IN ('in_flight', 'completed')", name=op.f("ck_idempotency_keys_state")
        ),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "inbound_webhooks",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("provider_instance_id", sa.String(length=64), nullable=True),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("processed_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_webhooks")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_inbound_webhooks_webhook_id")),
    )
    with op.batch_alter_table("inbound_webhooks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_webhooks_processed_at_id"), ["processed_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_webhooks_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("novita_instance_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column("product_id", sa.String(length=255), nullable=True),
        sa.Column("product_name", sa.String(length=255), nullable=True),
        sa.Column("region", sa.String(length=255), nullable=True),
        sa.Column("gpu_num", sa.Integer(), nullable=False),
        sa.Column("rootfs_size", sa.Integer(), nullable=True),
        sa.Column("billing_mode", sa.String(length=16), nullable=False),
        sa.Column("price_per_hour", sa.Numeric(precision=14, scale=6), nullable=True),
        sa.Column("template_id", sa.String(length=64), nullable=True),
        sa.Column("image_url", sa.String(length=500), nullable=True),
        sa.Column("image_auth_id", sa.String(length=255), nullable=True),
        sa.Column("preferred_region", sa.String(length=255), nullable=True),
        sa.Column("regions", JSON_TYPE, nullable=False),
        sa.Column("ports", JSON_TYPE, nullable=False),
        sa.Column("envs", JSON_TYPE, nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("labels", JSON_TYPE, nullable=False),
        sa.Column("readiness", JSON_TYPE, nullable=True),
        sa.Column("auto_stop", JSON_TYPE, nullable=True),
        sa.Column("port_mappings", JSON_TYPE, nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("submitted_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("running_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("ready_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("stopped_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("deleted_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_used_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("provider_observed_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("next_check_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("claim_owner", sa.String(length=100), nullable=True),
        sa.Column("claim_expires_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "billing_mode IN ('onDemand', 'spot', 'monthly')",
            name=op.f("ck_instances_billing_mode"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'provisioning', 'starting', 'running', 'ready', 'stopping', 'stopped', 'interrupted', 'deleting', 'deleted', 'failed')",
            name=op.f("ck_instances_status"),
        ),
        sa.CheckConstraint("gpu_num BETWEEN 1 AND 8", name=op.f("ck_instances_gpu_num")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_instances_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("novita_instance_id", name=op.f("uq_instances_novita_instance_id")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instances_created_at_id"), ["created_at", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instances_name"), ["name"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instances_next_check_at"), ["next_check_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instances_status"), ["status"], unique=False)

    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("acquired_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("expires_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "instance_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", UTC_TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=True),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", JSON_TYPE, nullable=False),
        sa.CheckConstraint(
            "source IN ('api', 'webhook', 'reconciler', 'provisioner', 'policy')",
            name=op.f("ck_instance_events_source"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_instance_events_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_events")),
        sa.UniqueConstraint("instance_id", "seq", name=op.f("uq_instance_events_instance_id_seq")),
    )
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_events_at"), ["at"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("target_url", sa.String(length=2048), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("delivered_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("claim_owner", sa.String(length=100), nullable=True),
        sa.Column("claim_expires_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed', 'cancelled', 'no_target')",
            name=op.f("ck_outbox_status"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_outbox_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint(
            "instance_id", "event_seq", name=op.f("uq_outbox_instance_id_event_seq")
        ),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_status_next_attempt_at"))

    op.drop_table("outbox")
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_events_at"))

    op.drop_table("instance_events")
    op.drop_table("leases")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_status"))
        batch_op.drop_index(batch_op.f("ix_instances_next_check_at"))
        batch_op.drop_index(batch_op.f("ix_instances_name"))
        batch_op.drop_index(batch_op.f("ix_instances_created_at_id"))

    op.drop_table("instances")
    with op.batch_alter_table("inbound_webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_webhooks_received_at"))
        batch_op.drop_index(batch_op.f("ix_inbound_webhooks_processed_at_id"))

    op.drop_table("inbound_webhooks")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))

    op.drop_table("idempotency_keys")
