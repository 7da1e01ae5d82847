"""`GET /api/events`: instance events as Server-Sent Events, for clients without webhooks.

Each event is sent as `id: <event id>` (its place in the whole history), `event:
instance-event` and one line of JSON data (the event as `/api/instances/{id}/events`
shows it, plus `id` and `instanceId`). A client that reconnects with `Last-Event-ID`
(browsers' EventSource do it by themselves) gets everything after that id, read from
the database, then the live events: nothing is lost across a disconnect. Without it the
stream starts at the present. Filters: `instance` (our id or the Novita id, repeatable),
`label=key:value` (repeatable, all must match), `status` (the status moved to,
comma-separated). Comment lines are sent as heartbeats.

Served with sse-starlette rather than Starlette's StreamingResponse: it adds what a
long-lived stream needs and StreamingResponse lacks (heartbeats, a timeout on each write
so a stalled client is cut, noticing a disconnect while idle, ending streams when uvicorn
shuts down, HEAD without a stream). The bounded buffer and the database reads are ours
(`service.event_hub`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.access import principal_of
from service.api.instances import _statuses
from service.api.query_params import Query
from service.db.event_feed import FeedEvent, FeedFilter
from service.errors import InstanceNotFoundError, ValidationFailedError
from service.event_hub import EventHub, SubscriberDroppedError
from service.lifecycle import Lifecycle
from service.presenters import event_view
from service.resources import Resources

log = structlog.get_logger(__name__)

EVENT_TYPE = "instance-event"
MAX_EVENT_ID_DIGITS = 19  # a signed 64-bit id
MAX_EVENT_ID = 2**63 - 1
MAX_INSTANCES = 100
MAX_FILTER_LENGTH = 255
RECONNECT_MILLISECONDS = 2000


def _invalid(field: str, message: str, value: Any = None) -> ValidationFailedError:
    entry: dict[str, Any] = {"field": field, "message": message}
    if value is not None:
        entry["value"] = value
    return ValidationFailedError([entry])


def parse_last_event_id(request: Request) -> int | None:
    """`Last-Event-ID` (or `lastEventId` in the query, for clients that cannot set
    headers): a whole number this stream sent, or absent."""
    for field, raw in (
        ("Last-Event-ID", request.headers.get("last-event-id")),
        ("lastEventId", request.query_params.get("lastEventId")),
    ):
        if raw is None:
            continue
        value = raw.strip()
        if value == "":
            return None  # the spec's way of resetting the id
        if not (value.isascii() and value.isdigit()) or len(value) > MAX_EVENT_ID_DIGITS:
            raise _invalid(field, "must be an event id this stream sent (digits)", raw[:40])
        number = int(value)
        if number > MAX_EVENT_ID:
            raise _invalid(field, "is larger than any event id", raw[:40])
        return number
    return None


async def parse_filter(request: Request, resources: Resources) -> FeedFilter:
    """The stream's filters from the query; an unknown instance is refused by name."""
    query = Query(request.query_params)  # the input gate: no NUL, bounded lengths
    raw_instances = [
        part.strip() for raw in query.texts("instance") for part in raw.split(",") if part.strip()
    ]
    if len(raw_instances) > MAX_INSTANCES:
        raise _invalid("instance", f"at most {MAX_INSTANCES} instances")
    scope = principal_of(request).scope
    lifecycle = Lifecycle(resources, team=scope)
    instance_ids = []
    for raw in raw_instances:
        if len(raw) > 64:
            raise _invalid("instance", "is not an instance id (too long)", raw[:64])
        try:
            instance_ids.append((await lifecycle.get(raw)).id)
        except InstanceNotFoundError:
            raise _invalid("instance", "no instance has this id", raw) from None
    labels = query.label_filters()
    for key, value in labels:
        if len(key) > MAX_FILTER_LENGTH or len(value) > MAX_FILTER_LENGTH:
            raise _invalid("label", f"keys and values are at most {MAX_FILTER_LENGTH} characters")
    return FeedFilter(
        instance_ids=tuple(instance_ids), labels=labels, statuses=_statuses(query), team=scope
    )


def event_data(item: FeedEvent) -> dict[str, Any]:
    return {"id": str(item.id), "instanceId": item.instance_id, **event_view(item.event)}


def _sse(item: FeedEvent) -> ServerSentEvent:
    return ServerSentEvent(
        data=orjson.dumps(event_data(item)).decode(), id=str(item.id), event=EVENT_TYPE
    )


async def _events(
    stream: AsyncIterator[FeedEvent], capacity: int
) -> AsyncIterator[ServerSentEvent]:
    # The first message tells the client how soon to reconnect; a comment carries it so
    # no event is implied.
    yield ServerSentEvent(comment="connected", retry=RECONNECT_MILLISECONDS)
    try:
        async for item in stream:
            yield _sse(item)
    except SubscriberDroppedError:
        # The client fell a whole buffer behind. Ending the stream lets it reconnect with
        # its Last-Event-ID and catch up from the database.
        log.info("events.stream_cut", reason="buffer full", buffer=capacity)
    except (SQLAlchemyError, OSError) as exc:
        # The database went away mid-stream: end it cleanly; the client resumes with its
        # Last-Event-ID once the database answers again.
        log.warning("events.stream_cut", reason="database error", error=type(exc).__name__)


class EventStreamResponse(EventSourceResponse):
    """A stalled client (a write blocked past the send timeout) ends its stream quietly."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("events.stream_cut", reason="write timed out")


async def stream_response(request: Request, resources: Resources, hub: EventHub) -> Any:
    """The stream for `request` (validated and opened first, so a bad filter is a plain
    4xx and a database outage a 503)."""
    after = parse_last_event_id(request)
    where = await parse_filter(request, resources)
    settings = resources.settings
    capacity = settings.event_stream_buffer
    stream = await hub.open_stream(where, after=after, capacity=capacity)
    return EventStreamResponse(
        _events(stream, capacity),
        ping=settings.event_stream_heartbeat,
        send_timeout=settings.event_stream_send_timeout,
        headers={"Cache-Control": "no-store"},
    )


async def event_stream(request: Request) -> Any:
    return await stream_response(request, request.state.resources, request.state.event_hub)


ROUTES = [Route("/events", event_stream, methods=["GET"])]
