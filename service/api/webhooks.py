"""`POST /webhooks/novita`: provider events, verified, stored durably, then acknowledged.

Order matters: size limit (413), signature over the raw bytes (401), envelope (400), then
the group-commit writer; the answer is 200 only once the event's batch has committed
(a duplicate `webhook-id` answers 200 too, and is stored once). Rejections are counted
per minute and reason (`webhook_tallies`) for the reliability report. Unknown event types are
stored and acknowledged; the applier decides what they mean.
"""

from __future__ import annotations

from functools import lru_cache

import orjson
import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from service.api import clean_json
from service.api.bodies import read_asgi_body
from service.db.inbox import InboxRecord
from service.errors import MalformedRequestError, PayloadTooLargeError, WebhookSignatureError
from service.resources import Resources
from service.settings import decode_webhook_secret
from service.signatures import SignatureError, verify

log = structlog.get_logger(__name__)


def parse_envelope(raw: bytes, webhook_id: str) -> InboxRecord:
    """`{"type", "timestamp"?, "data": {"instanceId"?, ...}}` → what the inbox stores.

    Parsed by the input gate's parser: what it refuses (a NUL, which PostgreSQL's jsonb
    cannot hold; a lone surrogate; an unsafe number; deep nesting) is a 400 here, never
    a row that poisons the writer's batch or cannot be read back."""
    try:
        envelope = clean_json.loads(raw, max_magnitude=None)
    except clean_json.JsonSyntaxError as exc:
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None
    except clean_json.UncleanJsonError as exc:
        problem = exc.problem
        raise MalformedRequestError(
            f"the body cannot be stored: {problem.path} {problem.message}"
        ) from None
    if not isinstance(envelope, dict):
        raise MalformedRequestError("the body must be a JSON object")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        raise MalformedRequestError("`type` must be a string of 1-100 characters")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise MalformedRequestError("`data` must be a JSON object")
    timestamp = envelope.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str | int | float):
        raise MalformedRequestError("`timestamp` must be an ISO 8601 string or Unix seconds")
    instance_id = data.get("instanceId")
    if instance_id is not None and (not isinstance(instance_id, str) or len(instance_id) > 64):
        raise MalformedRequestError("`data.instanceId` must be a string of at most 64 characters")
    return InboxRecord(
        webhook_id=webhook_id,
        event_type=event_type,
        provider_instance_id=instance_id,
        payload_json=raw.decode(),
    )


@lru_cache(maxsize=8)
def _decoded(secrets: tuple[SecretStr, ...]) -> list[bytes]:
    return [decode_webhook_secret(secret.get_secret_value()) for secret in secrets]


def _keys(resources: Resources) -> list[bytes]:
    return _decoded(tuple(resources.settings.inbound_webhook_secrets))


# The two answers a stored webhook can get, built once (a Response is not changed by
# sending it, and the edge layer adds its header to a copy of the list).
_STORED = Response(
    orjson.dumps({"received": True, "duplicate": False}), media_type="application/json"
)
_DUPLICATE = Response(
    orjson.dumps({"received": True, "duplicate": True}), media_type="application/json"
)


async def ingest_webhook(scope: Scope, receive: Receive) -> Response:
    """The endpoint on the bare ASGI scope (it is on the hot path, see `hot_routes`)."""
    resources: Resources = scope["state"]["resources"]
    try:
        return await _ingest(resources, scope["headers"], receive)
    except (WebhookSignatureError, MalformedRequestError, PayloadTooLargeError) as exc:
        # Counted in memory, written by the inbox writer once a second (no write per request).
        if resources.inbox is not None:
            resources.inbox.count_rejection(exc.code.lower(), resources.clock.now())
        raise


async def receive_novita_webhook(request: Request) -> Response:
    return await ingest_webhook(request.scope, request.receive)


_WANTED = {
    b"webhook-id": 0,
    b"webhook-timestamp": 1,
    b"webhook-signature": 2,
    b"content-length": 3,
}


def _webhook_headers(raw: list[tuple[bytes, bytes]]) -> list[str | None]:
    """webhook-id, -timestamp, -signature and content-length, in one pass (first wins)."""
    found: list[str | None] = [None, None, None, None]
    for name, value in raw:
        index = _WANTED.get(name)
        if index is not None and found[index] is None:
            found[index] = value.decode("latin-1")
    return found


async def _ingest(
    resources: Resources, raw_headers: list[tuple[bytes, bytes]], receive: Receive
) -> Response:
    settings = resources.settings
    msg_id, timestamp, signature, length = _webhook_headers(raw_headers)
    raw = await read_asgi_body(receive, limit=settings.inbound_webhook_max_bytes, declared=length)
    keys = _keys(resources)
    if not keys:
        raise WebhookSignatureError(
            "this service has no INBOUND_WEBHOOK_SECRETS configured; it accepts no webhooks"
        )
    try:
        verify(
            keys,
            msg_id=msg_id,
            timestamp=timestamp,
            signature=signature,
            body=raw,
            now=resources.clock.now().timestamp(),
            tolerance=settings.inbound_webhook_tolerance,
        )
    except SignatureError as exc:
        raise WebhookSignatureError(str(exc)) from None
    assert msg_id is not None  # verify() refuses a missing id
    if len(msg_id) > 255:
        raise MalformedRequestError("webhook-id is longer than 255 characters")
    record = parse_envelope(raw, msg_id)
    assert resources.inbox is not None, "the inbox writer runs with the app"
    is_new = await resources.inbox.submit(record)
    return _STORED if is_new else _DUPLICATE


ROUTES = [Route("/webhooks/novita", receive_novita_webhook, methods=["POST"])]
