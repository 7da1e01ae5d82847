"""The SQL schema (docs/data-model.md) as SQLAlchemy Core tables; Alembic migrations mirror it.

Constraint names come from the naming convention so that migrations, IntegrityError handling
and both databases agree on them.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.db.types import BigIntPK, JSONType, UTCDateTime
from service.domain import DEFAULT_TEAM, EventSource, Status

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: object) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)  # type: ignore[attr-defined]
    return f"{column} IN ({quoted})"


STATUS_VALUES = [status.value for status in Status]
SOURCE_VALUES = [source.value for source in EventSource]
BILLING_MODES = ("onDemand", "spot", "monthly")
OUTBOX_STATUSES = ("pending", "delivered", "failed", "cancelled", "no_target")
IDEMPOTENCY_STATES = ("in_flight", "completed")
KEY_ROLES = ("viewer", "operator", "admin")

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("novita_instance_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("provider_status", sa.String(32), nullable=True),
    sa.Column("status_reason", sa.String(64), nullable=True),
    sa.Column("product_id", sa.String(255), nullable=True),
    sa.Column("product_name", sa.String(255), nullable=True),
    sa.Column("region", sa.String(255), nullable=True),
    sa.Column("gpu_num", sa.Integer, nullable=False),
    sa.Column("rootfs_size", sa.Integer, nullable=True),
    sa.Column("billing_mode", sa.String(16), nullable=False),
    sa.Column("price_per_hour", sa.Numeric(14, 6), nullable=True),
    sa.Column("template_id", sa.String(64), nullable=True),
    sa.Column("image_url", sa.String(500), nullable=True),
    sa.Column("image_auth_id", sa.String(255), nullable=True),
    sa.Column("preferred_region", sa.String(255), nullable=True),
    sa.Column("regions", JSONType, nullable=False),
    sa.Column("ports", JSONType, nullable=False),
    sa.Column("envs", JSONType, nullable=False),
    sa.Column("webhook_url", sa.String(2048), nullable=True),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("readiness", JSONType, nullable=True),
    sa.Column("auto_stop", JSONType, nullable=True),
    sa.Column("port_mappings", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("submitted_at", UTCDateTime, nullable=True),
    sa.Column("running_at", UTCDateTime, nullable=True),
    sa.Column("ready_at", UTCDateTime, nullable=True),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("provider_observed_at", UTCDateTime, nullable=True),
    sa.Column("next_check_at", UTCDateTime, nullable=True),
    sa.Column("claim_owner", sa.String(100), nullable=True),
    sa.Column("claim_expires_at", UTCDateTime, nullable=True),
    sa.Column("event_seq", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # Idle auto-stop and spot-interruption recovery (migration 0004). The policy worker's
    # claim is its own, so it never collides with the reconciler's poll claim above.
    sa.Column("interruption_policy", JSONType, nullable=True),
    sa.Column("policy_claim_owner", sa.String(100), nullable=True),
    sa.Column("policy_claim_expires_at", UTCDateTime, nullable=True),
    sa.Column("idle_noted_at", UTCDateTime, nullable=True),
    sa.Column("recovery_attempts", sa.Integer, nullable=True),
    sa.Column("recovery_started_at", UTCDateTime, nullable=True),
    sa.Column("recovery_next_at", UTCDateTime, nullable=True),
    sa.Column("replaces_instance_id", sa.String(40), sa.ForeignKey("instances.id"), nullable=True),
    sa.Column(
        "replaced_by_instance_id", sa.String(40), sa.ForeignKey("instances.id"), nullable=True
    ),
    # An action asked of Novita and not yet seen to take effect (migration 0005): who asked
    # and why, so whichever observation moves the status records it (service.intents).
    sa.Column("action_intent", JSONType, nullable=True),
    # Create options passed to Novita as given (migration 0007): kind, tools,
    # networkStorages, command, entrypoint, minCudaVersion (service.launch).
    sa.Column("launch", JSONType, nullable=True),
    # The team that owns the instance (migration 0008): its keys' scope (service.api.access).
    sa.Column("team", sa.String(64), nullable=False, server_default=DEFAULT_TEAM),
    # Consecutive failed polls (migration 0009): the backoff before the next, on the row so
    # a restart or another process keeps it.
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    # When the readiness worker may probe a running instance again (migration 0010): on
    # the row, so every process keeps to one pace per instance.
    sa.Column("next_probe_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("novita_instance_id"),
    sa.CheckConstraint(_in("status", STATUS_VALUES), name="status"),
    sa.CheckConstraint(_in("billing_mode", BILLING_MODES), name="billing_mode"),
    sa.CheckConstraint("gpu_num BETWEEN 1 AND 8", name="gpu_num"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.Index(None, "status"),
    sa.Index(None, "next_check_at"),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "name"),
    sa.Index(None, "team", "created_at", "id"),
)

instance_events = sa.Table(
    "instance_events",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(40), sa.ForeignKey("instances.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=True),
    sa.Column("provider_status", sa.String(32), nullable=True),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("detail", JSONType, nullable=False),
    sa.UniqueConstraint("instance_id", "seq"),
    sa.CheckConstraint(_in("source", SOURCE_VALUES), name="source"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("instance_id", sa.String(40), sa.ForeignKey("instances.id"), nullable=False),
    sa.Column("event_seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("target_url", sa.String(2048), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(1000), nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("claim_owner", sa.String(100), nullable=True),
    sa.Column("claim_expires_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("instance_id", "event_seq"),
    sa.CheckConstraint(_in("status", OUTBOX_STATUSES), name="status"),
    sa.Index(None, "status", "next_attempt_at"),
)

inbound_webhooks = sa.Table(
    "inbound_webhooks",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.String(255), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("provider_instance_id", sa.String(64), nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("processed_at", UTCDateTime, nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.UniqueConstraint("webhook_id"),
    sa.Index(None, "received_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_body", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(_in("state", IDEMPOTENCY_STATES), name="state"),
    sa.Index(None, "expires_at"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# The Novita requests started in the last minute by every process on this database
# (PostgreSQL): RATE_LIMIT_PER_MINUTE is one budget for all of them (db/call_window.py).
novita_call_starts = sa.Table(
    "novita_call_starts",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Index(None, "started_at"),
)

# Listing notifications pages through the outbox in (created_at, id) order.
sa.Index("ix_outbox_created_at_id", outbox.c.created_at, outbox.c.id)

# One row per delivery attempt of an outbox row: its history for operators and the API.
outbox_attempts = sa.Table(
    "outbox_attempts",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.String(40), sa.ForeignKey("outbox.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("target_url", sa.String(2048), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(1000), nullable=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.CheckConstraint(_in("outcome", ("delivered", "failed", "gone", "refused")), name="outcome"),
    sa.Index(None, "outbox_id", "id"),
)

# Each redelivery starts a fresh retry ladder; the ladder position of a row is its attempts
# minus `attempts_before` of its newest redelivery (kept as an audit trail too).
outbox_redeliveries = sa.Table(
    "outbox_redeliveries",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.String(40), sa.ForeignKey("outbox.id"), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("attempts_before", sa.Integer, nullable=False),
    sa.Column("previous_status", sa.String(16), nullable=False),
    sa.Index(None, "outbox_id", "id"),
)

# Notification URLs that answered 410 Gone: nothing more is sent to them until re-enabled.
disabled_webhook_targets = sa.Table(
    "disabled_webhook_targets",
    metadata,
    sa.Column("url", sa.String(2048), primary_key=True),
    sa.Column("disabled_at", UTCDateTime, nullable=False),
    sa.Column("outbox_id", sa.String(40), nullable=True),
    sa.Column("status_code", sa.Integer, nullable=False),
)

# Webhook requests that leave no inbox row of their own: duplicates (answered 2xx, stored
# once) and rejections (401/400/413, never stored). One row per UTC minute and outcome,
# upserted, so a flood costs one small write per request and the table stays tiny.
webhook_tallies = sa.Table(
    "webhook_tallies",
    metadata,
    sa.Column("minute", UTCDateTime, primary_key=True),
    sa.Column("outcome", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

# Reports scan the history by time and read only these columns: carrying them in the index
# keeps such scans inside it (SQLite would otherwise fetch a million rows one at a time).
sa.Index(
    "ix_instance_events_at_covering",
    instance_events.c.at,
    instance_events.c.source,
    instance_events.c.from_status,
    instance_events.c.to_status,
    instance_events.c.instance_id,
)
# An instance's first event of a status (time to running/ready) is one index probe.
sa.Index(None, instance_events.c.instance_id, instance_events.c.to_status, instance_events.c.at)
# Delivery counts and latency percentiles per window without touching the outbox rows.
sa.Index(None, outbox.c.status, outbox.c.created_at, outbox.c.delivered_at)
# Retention: settled notifications are found by status and the time they settled.
sa.Index(None, outbox.c.status, outbox.c.updated_at)
# The applier claims the oldest unprocessed webhooks: only those are in this index, in id
# order, so a claim reads its batch straight off the index (no sort of the backlog), and
# marking a row processed adds nothing to it.
_UNPROCESSED = inbound_webhooks.c.processed_at.is_(None)
sa.Index(
    "ix_inbound_webhooks_unprocessed",
    inbound_webhooks.c.id,
    postgresql_where=_UNPROCESSED,
    sqlite_where=_UNPROCESSED,
)

# The built-in simulator's world (`serve --simulator`), one JSON document, so a restart on
# the same database finds the instances it left (service/simulator/persistence.py).
simulator_world = sa.Table(
    "simulator_world",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("saved_at", UTCDateTime, nullable=False),
    sa.Column("world", JSONType, nullable=False),
)

# API keys issued from the database (migration 0008): only a SHA-256 of each secret is kept
# (service.auth.keys says why that is enough); `id` is public and is also in the key itself.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("secret_hash"),
    sa.CheckConstraint(_in("role", KEY_ROLES), name="role"),
    sa.Index(None, "team"),
)
