"""The `/dashboard` mount: pages, actions, the cookie-authenticated event stream, assets."""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service.api.event_stream import stream_response
from service.dashboard import pages, signin
from service.dashboard.access import Permission, Principal
from service.dashboard.headers import DashboardMiddleware


@pages.page(Permission.VIEW)
async def events(request: Request, principal: Principal) -> Any:
    """`GET /api/events` for the dashboard's pages (a browser's EventSource sends the
    session cookie, not an API key): the same stream, filters and Last-Event-ID."""
    return await stream_response(request, pages.resources_of(request), request.state.event_hub)


def dashboard_mount() -> Mount:
    return Mount(
        "/dashboard",
        routes=[
            Route("/", pages.fleet, methods=["GET"]),
            Route("/sign-in", signin.sign_in_form, methods=["GET"]),
            Route("/sign-in", signin.sign_in, methods=["POST"]),
            Route("/sign-out", signin.sign_out, methods=["POST"]),
            Route("/instances", pages.instance_list, methods=["GET"]),
            Route("/instances/{instance_id}", pages.instance_detail, methods=["GET"]),
            Route("/instances/{instance_id}/delete", pages.confirm_delete, methods=["GET"]),
            Route("/instances/{instance_id}/{action}", pages.instance_action, methods=["POST"]),
            Route("/notifications", pages.notification_list, methods=["GET"]),
            Route("/notifications/{notification_id}", pages.notification_detail, methods=["GET"]),
            Route(
                "/notifications/{notification_id}/redeliver",
                pages.notification_redeliver,
                methods=["POST"],
            ),
            Route("/reports", pages.reports, methods=["GET"]),
            Route("/reports/{name}.csv", pages.report_csv, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Mount("/static", StaticFiles(directory=pages.STATIC), name="static"),
        ],
        middleware=[Middleware(DashboardMiddleware)],
    )
