"""Structured logging: JSON lines in production, readable console output in development.

Everything goes through structlog, and the standard library's loggers (uvicorn, alembic,
aiohttp) are routed through the same renderer. Two redaction steps keep credentials out:

- by key: the value of any key that looks like a credential is replaced, so a careless
  `log.info(..., headers=...)` cannot leak one;
- by value: every configured secret (API keys, webhook secrets in their `whsec_`, base64
  and decoded forms, the Novita key, the database password; see `register_secrets`) is
  replaced wherever it appears in a line's text, exception text included.

Tracebacks are rendered as plain text in both formats, never with local variables (a
frame's locals hold request bodies, keys and decoded secrets), and cheaply: the console
renderer's rich tracebacks take seconds on the event loop for a deep stack.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from service.settings import Settings

_SECRET_MARKERS = (
    "authorization",
    "api_key",
    "apikey",
    "secret",
    "password",
    "token",
    "credential",
    "image_auth",
)
REDACTED = "[redacted]"
# Shorter values are not scrubbed from text: they would blank out ordinary words.
MIN_SECRET_LENGTH = 6
# The id of the HTTP request being served (set by the edge middleware): one context
# variable set per request, added to log lines only when one is written.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def add_request_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _is_secret_key(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


class _SecretValues:
    """The configured secrets, as one pattern that finds any of them in a text."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - self.values
        if not fresh:
            return
        self.values |= fresh
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(self.values, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def scrub(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(REDACTED, text)


_SECRETS = _SecretValues()


def register_secrets(values: Iterable[str]) -> None:
    """Scrub these values from every log line from now on (they add to earlier ones)."""
    _SECRETS.add(values)


def _forms_of_webhook_secret(secret: str) -> list[str]:
    """`whsec_<base64>`, the base64 alone, and the key bytes as text (and as repr shows)."""
    forms = [secret]
    encoded = secret.removeprefix("whsec_")
    if encoded != secret:
        forms.append(encoded)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return forms
        forms.append(repr(key)[2:-1])
        forms.append(key.decode("latin-1"))
        forms.append(key.hex())
    return forms


def secret_forms(settings: Settings) -> list[str]:
    """Every form in which a secret of these settings could show up in a log line."""
    forms: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, SecretStr):
                forms.extend(_forms_of_webhook_secret(item.get_secret_value()))
    password = make_url(settings.database_url).password
    if password:
        forms.append(str(password))
    return forms


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRETS.scrub(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _is_secret_key(str(k)) else _redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key != "event" and _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _plain_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`exc_info` rendered as a plain traceback (no locals) under `exception`, scrubbed."""
    event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    exception = event_dict.get("exception")
    if isinstance(exception, str):
        event_dict["exception"] = _SECRETS.scrub(exception)
    return event_dict


def build_formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every log line in format `fmt` ("json" or "console")."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # Only ever reached for an exception not already rendered above; plain either
            # way (the default, with rich installed, prints every frame's locals).
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _plain_exception,
            renderer,
        ],
    )


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    add_request_id,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


def configure_logging(
    level: str = "INFO", fmt: str = "console", *, secrets: Iterable[str] = ()
) -> None:
    register_secrets(secrets)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(build_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every connection at INFO; keep its upgrade lines, drop the chatter.
    logging.getLogger("alembic.runtime.migration").setLevel(
        level if level == "DEBUG" else "WARNING"
    )
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
