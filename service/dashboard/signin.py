"""Signing in with an API key through a form, and signing out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.api.auth import key_matches
from service.dashboard.access import check_csrf, current_session, read_form
from service.dashboard.pages import render_page
from service.dashboard.session import Session, SessionCookie
from service.errors import ForbiddenError

HOME = "/dashboard/"
MAX_KEY_LENGTH = 512


def safe_next(value: str | None) -> str:
    """Only a dashboard path of this site (never another host, never a scheme)."""
    if (
        value
        and value.startswith("/dashboard")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 2000
        and value.isprintable()
    ):
        return value
    return HOME


def _cookie(request: Request) -> SessionCookie:
    cookie: SessionCookie = request.state.dashboard_cookie
    return cookie


def _form(
    request: Request, session: Session, *, error: str | None, status: int, next_page: str | None
) -> Response:
    response = render_page(
        request,
        "sign_in.html",
        {
            "csrf": session.csrf,
            "next": safe_next(next_page),
            "error": error,
        },
        status,
    )
    _cookie(request).write(response, request, session)
    return response


async def sign_in_form(request: Request) -> Response:
    session = current_session(request)
    if session is not None and session.signed_in:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form(
        request,
        session or _cookie(request).new(),
        error=None,
        status=200,
        next_page=request.query_params.get("next"),
    )


async def sign_in(request: Request) -> Response:
    session = current_session(request)
    form = await read_form(request)
    try:
        check_csrf(session, form)
    except ForbiddenError as exc:
        return _form(
            request, _cookie(request).new(), error=str(exc), status=403, next_page=form.get("next")
        )
    assert session is not None
    key = form.get("api_key", "").strip()
    keys = request.state.resources.settings.api_key_values()
    if not key or len(key) > MAX_KEY_LENGTH or not keys or not key_matches(key, keys):
        return _form(
            request,
            session,
            error="That API key is not valid here.",
            status=401,
            next_page=form.get("next"),
        )
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    # A fresh session (and CSRF token) at sign-in: nothing from before carries over.
    _cookie(request).write(response, request, _cookie(request).new(key))
    return response


async def sign_out(request: Request) -> Response:
    session = current_session(request)
    form = await read_form(request)
    try:
        check_csrf(session, form)
    except ForbiddenError as exc:
        return render_page(request, "error.html", {"message": exc.message}, exc.http_status)
    response = RedirectResponse("/dashboard/sign-in", status_code=303)
    SessionCookie.clear(response, request)
    return response
