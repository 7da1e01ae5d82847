"""Service configuration: parsed once from the environment (and `.env`) into a frozen object.

Every field maps to an upper-case environment variable of the same name. Secrets are
`SecretStr`, so neither `repr()` nor logs show them. `load_settings()` turns a validation
failure into one `ConfigError` line that names the offending variable; the CLI prints that
line and exits with code 2.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.errors import ConfigError

DEFAULT_NOVITA_API_BASE_URL = "https://api.novita.ai/gpu-instance/openapi/v1"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./novita-lifecycle.db"
SUPPORTED_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _split_csv(value: object) -> object:
    """Comma-separated environment values become a tuple of trimmed, non-empty items."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def decode_webhook_secret(secret: str) -> bytes:
    """Return the key bytes of a Standard Webhooks secret (`whsec_<base64>`)."""
    if not secret.startswith("whsec_"):
        raise ValueError("must have the form whsec_<base64>")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not valid base64") from None
    if len(key) < 16:
        raise ValueError("the key must be at least 16 bytes (24 base64 characters)")
    return key


class Settings(BaseSettings):
    """Everything the service reads from its environment. Immutable once built."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    # Provider
    novita_api_key: SecretStr | None = Field(
        default=None, description="Novita API key; without it `serve` needs --simulator."
    )
    novita_simulator: bool = Field(
        default=False,
        description="Use the built-in Novita simulator (what `serve --simulator` sets).",
    )
    novita_api_base_url: str = Field(
        default=DEFAULT_NOVITA_API_BASE_URL, description="Base URL of the Novita GPU API v1."
    )
    max_retry_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per retryable Novita call (1 = no retry)."
    )
    request_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Timeout of one Novita request, seconds."
    )
    rate_limit_per_minute: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description=(
            "Novita requests per minute: for every process on one PostgreSQL database"
            " together (see RATE_LIMIT_SHARED), for the one process on SQLite."
        ),
    )
    rate_limit_shared: bool = Field(
        default=True,
        description=(
            "On PostgreSQL, every process on the database shares RATE_LIMIT_PER_MINUTE (one"
            " Novita account): each start takes a place in a window kept in the database."
            " false: each process has the whole limit to itself."
        ),
    )

    # Storage
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description=(
            "SQLAlchemy URL: sqlite+aiosqlite:///file.db or postgresql+asyncpg://... (options"
            " as SQLAlchemy's asyncpg dialect reads them, e.g. ?ssl=require, or"
            " ?prepared_statement_cache_size=0 behind pgbouncer; connect timeout 10 s unless"
            " ?timeout= is given)"
        ),
    )
    sqlite_busy_timeout_ms: int = Field(
        default=5000, ge=0, le=600_000, description="SQLite busy_timeout, milliseconds."
    )

    # HTTP API and webhooks
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated API keys accepted on /api (Bearer), as admin keys of the "
        "default team; keys issued with `novita-lifecycle keys create` need no entry here.",
    )
    api_key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Seconds a process may reuse what it read of an issued API key: a "
        "revocation takes effect everywhere within this time (0: read on every request).",
    )
    inbound_webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="Comma-separated whsec_ secrets for POST /webhooks/novita."
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are believed, or `*` for any. Empty: "
        "those headers are ignored, whoever sends them.",
    )
    inbound_webhook_tolerance: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="Seconds a webhook-timestamp may differ from our clock, either way.",
    )
    inbound_webhook_max_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest inbound webhook body accepted (413 above).",
    )
    inbound_queue_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Webhooks waiting to be stored before new ones get 503 + Retry-After.",
    )
    inbox_retention_days: float = Field(
        default=4,
        ge=4,
        le=365,
        description="Days processed inbound webhooks are kept (senders retry for 3).",
    )
    notification_retention_days: float = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days delivered notifications (and cancelled or targetless ones) are "
        "kept, with their delivery attempts, after they settled.",
    )
    dead_notification_retention_days: float = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days dead letters (failed notifications) are kept after they failed, "
        "for someone to see and redeliver; at least NOTIFICATION_RETENTION_DAYS.",
    )
    webhook_url: str | None = Field(
        default=None, description="Default notification URL when an instance has none."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="whsec_ secret that signs outgoing notifications."
    )
    webhook_timeout: float = Field(
        default=15.0, gt=0, le=300, description="Timeout of one notification delivery, seconds."
    )
    webhook_retry_schedule: Annotated[
        tuple[Annotated[float, Field(ge=0, le=7 * 86400)], ...],
        NoDecode,
        BeforeValidator(_split_csv),
    ] = Field(
        default=(0, 5, 300, 1800, 7200, 18000, 36000, 36000),
        min_length=1,
        description="Comma-separated seconds before each notification attempt (one entry per "
        "attempt; up to +10% jitter); after the last failed attempt the notification is failed.",
    )
    allow_private_webhook_targets: bool = Field(
        default=False,
        description="Allow notification URLs on private, loopback or link-local addresses "
        "(cloud metadata addresses stay refused).",
    )
    notifier_concurrency: int = Field(
        default=16, ge=1, le=1000, description="Notification deliveries in flight, this process."
    )
    notifier_per_host_concurrency: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Notification deliveries in flight per target host (by default one receiver "
        "may have all NOTIFIER_CONCURRENCY in hand; a receiver that answers one request at a "
        "time needs this times its time per request under WEBHOOK_TIMEOUT).",
    )
    notifier_claim_ttl: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a claimed notification stays reserved to this process (at least "
        "twice WEBHOOK_TIMEOUT is used); after a crash it is retried once the claim expires.",
    )

    # Workers
    reconcile_interval: float = Field(
        default=30.0, gt=0, description="Seconds between polls of a stable instance."
    )
    relist_interval: float = Field(
        default=300.0, gt=0, description="Seconds between full relists of provider instances."
    )
    stable_poll_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of RATE_LIMIT_PER_MINUTE the polls of stable instances may use: "
        "with more instances than RECONCILE_INTERVAL allows within it, each is polled less "
        "often (the relist still sees all of them every RELIST_INTERVAL).",
    )
    startup_timeout: float = Field(
        default=900.0, gt=0, description="Seconds from running to ready before `failed`."
    )
    readiness_probe_timeout: float = Field(
        default=5.0, gt=0, le=120, description="Timeout of one readiness probe, seconds."
    )
    readiness_concurrency: int = Field(
        default=20, ge=1, le=1000, description="Readiness probes in flight, this process."
    )
    readiness_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Longest wait, seconds, between readiness probes of a running instance "
        "not yet ready: the first comes as soon as `running` is recorded, the next after "
        "0.25 s, doubling up to this.",
    )
    allow_private_probe_targets: bool = Field(
        default=False,
        description="Allow readiness probes of private, loopback or link-local endpoints "
        "(cloud metadata addresses stay refused); always on with the built-in simulator.",
    )
    poll_interval_transitional: float = Field(
        default=5.0,
        gt=0,
        description="Base of the backoff after a failed poll or provisioning attempt, seconds "
        "(instances in transition are otherwise polled as often as the rate limit allows, "
        "TRANSITIONAL_POLL_FLOOR at most).",
    )
    transitional_poll_floor: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Shortest interval, seconds, between two reads of an instance in "
        "transition: with few of them they are read this often, with more each less often, "
        "within what RATE_LIMIT_PER_MINUTE leaves after creates and actions.",
    )
    poll_error_max_backoff: float = Field(
        default=300.0,
        gt=0,
        description="Longest per-instance backoff, seconds, after failed polls or deferrals.",
    )
    action_settle_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a requested start/stop outweighs a provider state contradicting it.",
    )
    claim_ttl_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a worker's claim on an instance lasts before others may take it.",
    )
    provisioner_batch_size: int = Field(
        default=10, ge=1, le=1000, description="Pending instances one provisioner batch claims."
    )
    reconciler_batch_size: int = Field(
        default=50, ge=1, le=10_000, description="Due instances one reconciler batch polls."
    )
    capacity_block_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a region x product is skipped after INSUFFICIENT_RESOURCE.",
    )
    template_cache_seconds: float = Field(
        default=300.0, ge=0, description="Seconds a fetched Novita template is reused."
    )
    catalogue_cache_seconds: float = Field(
        default=30.0, ge=0, description="Seconds the product and cluster lists are reused."
    )
    create_settle_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Seconds after an unanswered create before creating again if not found.",
    )
    stuck_instance_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Seconds an instance may stay `pending` (since accepted) or `provisioning` "
        "(since submitted) before /health turns `degraded` and names it among the stuck.",
    )

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Minimum log level."
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description="console (readable) or json (production)."
    )

    # Policies: idle auto-stop and spot-interruption recovery (service/workers/policy.py)
    auto_stop_idle_minutes: int | None = Field(
        default=None,
        ge=1,
        le=10080,
        description="Default idle minutes before a ready instance without its own autoStop "
        "is stopped; unset = no default (only instances with autoStop are stopped).",
    )
    auto_stop_action: Literal["stop", "delete"] = Field(
        default="stop", description="What the default idle policy does: stop or delete."
    )
    auto_stop_grace_minutes: float = Field(
        default=10,
        ge=0,
        le=1440,
        description="Minutes after each (re)start during which no instance is idle-stopped.",
    )
    auto_stop_dry_run: bool = Field(
        default=False,
        description="Idle policy only records (event + log) what it would do; acts on nothing.",
    )
    spot_interruption_action: Literal["notify", "restart", "recreate"] = Field(
        default="notify",
        description="Default for a reclaimed spot instance without its own onInterruption: "
        "notify (record only), restart it, or recreate it elsewhere.",
    )
    spot_recovery_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Restart/recreate attempts before `failed`."
    )
    spot_recovery_max_minutes: float = Field(
        default=60,
        gt=0,
        le=10080,
        description="Minutes from the interruption after which recovery gives up (`failed`).",
    )
    spot_recovery_backoff_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Wait after the first failed recovery attempt; doubles after each one.",
    )
    policy_interval: float = Field(
        default=15, gt=0, le=3600, description="Seconds between policy worker passes."
    )

    # The event stream (GET /api/events) and the dashboard
    event_stream_poll_interval: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Seconds between reads of new instance events while a stream is open.",
    )
    event_stream_buffer: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Events a stream may hold for a slow client; past that the client is "
        "disconnected (it resumes with Last-Event-ID).",
    )
    event_stream_heartbeat: float = Field(
        default=15.0, gt=0, le=300, description="Seconds between heartbeat comments."
    )
    event_stream_send_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds a write to a stream client may block before it is disconnected.",
    )
    dashboard_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs dashboard session cookies (give every process the same); "
        "unset: derived from API_KEYS, so changing the keys signs everyone out.",
    )
    dashboard_session_minutes: int = Field(
        default=480, ge=1, le=10080, description="Minutes a dashboard sign-in lasts."
    )

    @field_validator("api_keys", "inbound_webhook_secrets", "trusted_proxies", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if isinstance(value, str):
            return (
                value.upper()
                if value.lower() in {"debug", "info", "warning", "error", "critical"}
                else value.lower()
            )
        return value

    @field_validator("novita_api_key", "webhook_secret", "dashboard_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _check_webhook_url(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("dead_notification_retention_days")
    @classmethod
    def _dead_letters_outlive_delivered(cls, value: float, info: ValidationInfo) -> float:
        delivered = info.data.get("notification_retention_days")
        if delivered is not None and value < delivered:
            raise ValueError(
                f"must be at least NOTIFICATION_RETENTION_DAYS ({delivered:g}): a dead letter "
                "is kept at least as long as a delivered notification"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("is not a valid SQLAlchemy URL") from None
        if url.drivername not in SUPPORTED_DATABASE_DRIVERS:
            raise ValueError(
                f"driver {url.drivername!r} is not supported; use one of "
                + ", ".join(SUPPORTED_DATABASE_DRIVERS)
            )
        return value

    @field_validator("inbound_webhook_secrets")
    @classmethod
    def _check_inbound_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, secret in enumerate(value, start=1):
            try:
                decode_webhook_secret(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"secret #{index} {exc}") from None
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_webhook_secret(value.get_secret_value())
        return value

    def __repr_args__(self) -> Any:
        # DATABASE_URL may carry a password: show it masked, like the SecretStr fields.
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                value = make_url(value).render_as_string(hide_password=True)
            yield name, value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def api_key_values(self) -> tuple[str, ...]:
        return tuple(key.get_secret_value() for key in self.api_keys)


def load_settings(**overrides: object) -> Settings:
    """Build `Settings` from the environment; raise `ConfigError` naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid configuration: {field.upper()} {message}") from None
