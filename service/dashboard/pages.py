"""The dashboard's pages and actions.

Figures and actions come from the REST API's own handlers (called with the page's
request, so filters, pagination, validation and lifecycle rules are the API's, to the
letter) or from the functions those handlers call (reports). Nothing here decides what
an instance may do. Every page calls `authorize` first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from service.api import instances as instances_api
from service.api import notifications as notifications_api
from service.dashboard.access import (
    Permission,
    Principal,
    SignInRequiredError,
    authorize,
    check_csrf,
    current_session,
    read_form,
)
from service.dashboard.charts import bar_chart
from service.db import reports as report_sql
from service.db.event_feed import last_event_id
from service.db.fleet_now import running_now
from service.db.health_counts import service_counts
from service.db.status_ages import longest_waiting
from service.domain import Status
from service.errors import ForbiddenError, ServiceError, ValidationFailedError
from service.reports.params import parse_query
from service.reports.render import render
from service.reports.run import run_report
from service.resources import Resources

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STUCK_AFTER = timedelta(minutes=15)
ACTIONS = ("start", "stop", "restart", "delete")
NOTIFICATION_TABS = ("pending", "delivered", "failed")

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is escaped unless a template says otherwise (none do)
        undefined=jinja2.StrictUndefined,
    )
)

Page = Callable[[Request, Principal], Awaitable[Response]]


def age(value: str | datetime | None, now: datetime) -> str:
    """`2h 5m`-style time since `value` (an ISO time as the API shows it, or a datetime)."""
    if value is None or value == "":
        return "—"
    when = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    seconds = max(int((now - when).total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


templates.env.filters["age"] = age


def resources_of(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


def render_page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    session = current_session(request)
    base = {
        "csrf": session.csrf if session else "",
        "signed_in": bool(session and session.signed_in),
        "path": request.url.path,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def page(permission: Permission) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """Authorise, then run the page; a missing session goes to the sign-in form."""

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = authorize(request, permission)
                return await handler(request, principal)
            except SignInRequiredError:
                target = "/dashboard/sign-in"
                if request.method == "GET":
                    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    target += "?" + urlencode({"next": here})
                return RedirectResponse(target, status_code=303)
            except ForbiddenError as exc:
                return render_page(request, "error.html", {"message": exc.message}, exc.http_status)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _json(response: Response) -> Any:
    return orjson.loads(bytes(response.body))


def _with_query(request: Request, params: list[tuple[str, str]]) -> Request:
    """The same request with another query string (to call an API handler with it)."""
    scope = {**request.scope, "query_string": urlencode(params).encode()}
    return Request(scope, request.receive)


def _error_text(exc: ServiceError) -> str:
    if isinstance(exc, ValidationFailedError):
        return "; ".join(f"{f['field']}: {f['message']}" for f in exc.fields)
    return exc.message


# --- fleet -------------------------------------------------------------------------------


@page(Permission.VIEW)
async def fleet(request: Request, principal: Principal) -> Response:
    resources = resources_of(request)
    now = resources.clock.now()
    report = await run_report(
        resources.database, parse_query("fleet", now=now, group_by="status,region"), now=now
    )
    by_status: dict[str, int] = {}
    by_region: dict[str, dict[str, int]] = {}
    for status, region, count in report.sections[0].rows:
        by_status[status] = by_status.get(status, 0) + count
        by_region.setdefault(region or "—", {})[status] = count
    async with resources.database.read() as conn:
        running = await running_now(conn)
        counts = await service_counts(conn)
        stuck = await longest_waiting(conn, entered_before=now - STUCK_AFTER, limit=20)
    failed_page = _json(
        await instances_api.list_instances(
            _with_query(request, [("status", "failed"), ("limit", "20")])
        )
    )
    novita = resources.novita.status()
    return render_page(
        request,
        "fleet.html",
        {
            "statuses": [s.value for s in Status],
            "by_status": by_status,
            "by_region": dict(sorted(by_region.items())),
            "running": running,
            "stuck": stuck,
            "failed": failed_page["items"],
            "breaker": novita.breaker_state,
            "limiter_backlog": novita.limiter_backlog,
            "outbox": counts.outbox_by_status,
            "oldest_pending": counts.oldest_pending_notification,
            "inbox_backlog": counts.inbox_backlog,
            "now": now,
        },
    )


# --- instances ---------------------------------------------------------------------------

FILTERS = ("status", "region", "product", "name", "label", "limit")


@page(Permission.VIEW)
async def instance_list(request: Request, principal: Principal) -> Response:
    params = request.query_params
    try:
        listed = _json(await instances_api.list_instances(request))
        error = None
    except ValidationFailedError as exc:
        listed, error = {"items": [], "nextCursor": None}, _error_text(exc)
    kept = [(k, v) for k, v in params.multi_items() if k in FILTERS and v]
    next_link = None
    if listed["nextCursor"]:
        next_link = "?" + urlencode([*kept, ("cursor", listed["nextCursor"])])
    return render_page(
        request,
        "instances.html",
        {
            "items": listed["items"],
            "error": error,
            "filters": {k: params.get(k, "") for k in FILTERS},
            "labels": params.getlist("label"),
            "statuses": [s.value for s in Status],
            "next_link": next_link,
            "first_link": ("?" + urlencode(kept)) if params.get("cursor") else None,
            "now": resources_of(request).clock.now(),
        },
        status_code=422 if error else 200,
    )


async def _instance_context(request: Request) -> dict[str, Any]:
    resources = resources_of(request)
    async with resources.database.read() as conn:
        stream_after = await last_event_id(conn)  # before reading: nothing falls between
    instance = _json(await instances_api.get_instance(request))
    cursor = request.query_params.get("cursor", "0")
    events = _json(
        await instances_api.list_events(
            _with_query(request, [("cursor", cursor), ("limit", "200")])
        )
    )
    return {
        "instance": instance,
        "events": events["items"],
        "events_next": events["nextCursor"],
        "stream_after": stream_after,
        "actions": ACTIONS,
        "now": resources.clock.now(),
        "error": None,
        "notice": None,
    }


@page(Permission.VIEW)
async def instance_detail(request: Request, principal: Principal) -> Response:
    try:
        context = await _instance_context(request)
    except ServiceError as exc:
        return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
    done = request.query_params.get("done")
    if done in ACTIONS:
        context["notice"] = f"{done} requested"
    return render_page(request, "instance.html", context)


@page(Permission.ACT)
async def instance_action(request: Request, principal: Principal) -> Response:
    check_csrf(current_session(request), await read_form(request))
    action = request.path_params["action"]
    if action not in ACTIONS:
        return render_page(request, "error.html", {"message": "no such action"}, 404)
    handler = {
        "start": instances_api.start_instance,
        "stop": instances_api.stop_instance,
        "restart": instances_api.restart_instance,
        "delete": instances_api.delete_instance,
    }[action]
    instance_id = request.path_params["instance_id"]
    try:
        await handler(request)
    except ServiceError as exc:
        try:
            context = await _instance_context(request)
        except ServiceError:
            return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
        context["error"] = f"{action} refused: {exc.message}"
        return render_page(request, "instance.html", context, exc.http_status)
    target = f"/dashboard/instances/{quote(instance_id, safe='')}?done={action}"
    return RedirectResponse(target, status_code=303)


@page(Permission.ACT)
async def confirm_delete(request: Request, principal: Principal) -> Response:
    try:
        instance = _json(await instances_api.get_instance(request))
    except ServiceError as exc:
        return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
    return render_page(request, "confirm_delete.html", {"instance": instance})


# --- notifications -----------------------------------------------------------------------


@page(Permission.VIEW)
async def notification_list(request: Request, principal: Principal) -> Response:
    tab = request.query_params.get("status", "failed")
    if tab not in NOTIFICATION_TABS:
        tab = "failed"
    query = [("status", tab), ("limit", "50")]
    cursor = request.query_params.get("cursor")
    if cursor:
        query.append(("cursor", cursor))
    try:
        listed = _json(await notifications_api.list_notifications(_with_query(request, query)))
        error = None
    except ValidationFailedError as exc:
        listed, error = {"items": [], "nextCursor": None}, _error_text(exc)
    next_link = None
    if listed["nextCursor"]:
        next_link = "?" + urlencode([("status", tab), ("cursor", listed["nextCursor"])])
    return render_page(
        request,
        "notifications.html",
        {
            "tab": tab,
            "tabs": NOTIFICATION_TABS,
            "items": listed["items"],
            "next_link": next_link,
            "error": error,
            "notice": request.query_params.get("redelivered"),
        },
        status_code=422 if error else 200,
    )


@page(Permission.VIEW)
async def notification_detail(request: Request, principal: Principal) -> Response:
    try:
        detail = _json(await notifications_api.get_notification(request))
    except ServiceError as exc:
        return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
    payload = orjson.dumps(detail.get("payload"), option=orjson.OPT_INDENT_2).decode()
    return render_page(request, "notification.html", {"n": detail, "payload": payload})


@page(Permission.ACT)
async def notification_redeliver(request: Request, principal: Principal) -> Response:
    check_csrf(current_session(request), await read_form(request))
    try:
        await notifications_api.redeliver_notification(request)
    except ServiceError as exc:
        return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
    notification_id = request.path_params["notification_id"]
    return RedirectResponse(
        "/dashboard/notifications?"
        + urlencode({"status": "pending", "redelivered": notification_id}),
        status_code=303,
    )


# --- reports -----------------------------------------------------------------------------

REPORT_WINDOWS = ("24h", "7d", "30d", "90d")


def _window(request: Request) -> str:
    since = request.query_params.get("since", "7d")
    return since if since in REPORT_WINDOWS else "7d"


async def _reports(request: Request, since: str) -> dict[str, Any]:
    resources = resources_of(request)
    now = resources.clock.now()
    usage = await run_report(
        resources.database, parse_query("usage", now=now, since=since, group_by="day"), now=now
    )
    provisioning = await run_report(
        resources.database, parse_query("provisioning", now=now, since=since), now=now
    )
    return {"usage": usage, "provisioning": provisioning}


# Time-to-ready histogram buckets: (upper bound in seconds, label); the last is open.
READY_BUCKETS = (
    (60, "<1m"),
    (120, "1-2m"),
    (300, "2-5m"),
    (600, "5-10m"),
    (900, "10-15m"),
    (1800, "15-30m"),
    (None, ">30m"),
)


def ready_histogram(seconds: list[float]) -> list[tuple[str, float]]:
    """How many instances became ready within each bucket of time after their request."""
    counts = [0] * len(READY_BUCKETS)
    for value in seconds:
        for index, (upper, _) in enumerate(READY_BUCKETS):
            if upper is None or value < upper:
                counts[index] += 1
                break
    return [(label, float(count)) for (_, label), count in zip(READY_BUCKETS, counts, strict=True)]


async def _ready_seconds(request: Request, since: str) -> list[float]:
    """Per instance requested in the window, seconds to ready: the rows the provisioning
    report summarises into percentiles (`provisioning_instances`)."""
    resources = resources_of(request)
    now = resources.clock.now()
    window = parse_query("provisioning", now=now, since=since).window
    assert window is not None
    async with report_sql.report_connection(resources.database) as conn:
        rows = await report_sql.provisioning_instances(conn, (), window)
    return [float(row[-1]) for row in rows if row[-1] is not None]


@page(Permission.VIEW)
async def reports(request: Request, principal: Principal) -> Response:
    since = _window(request)
    built = await _reports(request, since)
    usage = built["usage"].sections[0].records()
    summary = built["provisioning"].sections[0].records()
    reasons = built["provisioning"].sections[2].records()
    ready = await _ready_seconds(request, since)
    return render_page(
        request,
        "reports.html",
        {
            "since": since,
            "windows": REPORT_WINDOWS,
            "usage": usage,
            "summary": summary[0] if summary else None,
            "reasons": reasons,
            "gpu_chart": bar_chart(
                "GPU-hours per day", [(r["day"], float(r["gpu_hours"])) for r in usage]
            ),
            "cost_chart": bar_chart(
                "Cost per day (USD)", [(r["day"], float(r["cost_usd"])) for r in usage], unit="$"
            ),
            "ready_chart": bar_chart(
                "Instances by time from request to ready",
                ready_histogram(ready) if ready else [],
            ),
            "reasons_chart": bar_chart(
                "Failures by reason", [(r["reason"] or "—", float(r["failures"])) for r in reasons]
            ),
        },
    )


CSV_SECTIONS = {
    "usage": ("usage", "usage"),
    "provisioning": ("provisioning", "summary"),
    "failure_reasons": ("provisioning", "failure_reasons"),
}


@page(Permission.VIEW)
async def report_csv(request: Request, principal: Principal) -> Response:
    name = request.path_params["name"]
    if name not in CSV_SECTIONS:
        return render_page(request, "error.html", {"message": "no such report"}, 404)
    since = _window(request)
    report_name, section = CSV_SECTIONS[name]
    built = await _reports(request, since)
    body = render(built[report_name], "csv", section=section)
    filename = f"{name}-{since}-{_stamp(resources_of(request).clock.now())}.csv"
    return Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")
