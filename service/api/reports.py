"""`GET /api/reports/{name}`: the same reports as `novita-lifecycle report`, over HTTP.

Query parameters: `since`, `until` (windowed reports), `at` (fleet), `groupBy`
(comma-separated), `format` (json, the default; csv; table) and `section`. A bad value
answers 422 naming the parameter; an unknown report 404.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.access import principal_of
from service.api.openapi import EXTRA_PATHS, _errors, _operation, _path, _query
from service.api.query_params import Query
from service.auth.roles import MAX_TEAM, NO_TEAM, TEAM_QUERY_PATTERN, TEAM_RULE, valid_team
from service.errors import ValidationFailedError
from service.reports.params import REPORT_NAMES, SPECS, parse_query
from service.reports.render import render
from service.reports.run import run_report
from service.resources import Resources

# API parameter name → the name `parse_query` uses (and reports in its errors).
_PARAMETERS = {
    "since": "since",
    "until": "until",
    "at": "at",
    "groupBy": "group_by",
    "team": "team",
}
_OUTPUT = ("format", "section")
_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}


def _api_fields(error: ValidationFailedError) -> ValidationFailedError:
    names = {internal: public for public, internal in _PARAMETERS.items()}
    return ValidationFailedError(
        [{**item, "field": names.get(str(item["field"]), item["field"])} for item in error.fields]
    )


def _report_team(request: Request) -> str | None:
    """`team=` narrows an admin's report; any other key's report covers its own team only
    (naming another team reports nothing, as if that team had no instances)."""
    raw = request.query_params.get("team") or None  # empty: not given
    if raw is not None and not valid_team(raw):
        raise ValidationFailedError(
            [{"field": "team", "message": f"must be {TEAM_RULE}", "value": raw[:MAX_TEAM]}]
        )
    scope = principal_of(request).scope
    if scope is None:
        return raw or None
    return scope if raw in (None, scope) else NO_TEAM


async def get_report(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SPECS:
        raise HTTPException(
            404, f"no report named {name!r}; reports are: {', '.join(REPORT_NAMES)}"
        )
    params = request.query_params
    unknown = sorted(set(params) - set(_PARAMETERS) - set(_OUTPUT))
    if unknown:
        raise ValidationFailedError(
            [{"field": field, "message": "unknown parameter"} for field in unknown]
        )
    fmt = params.get("format", "json")
    if fmt not in _MEDIA_TYPES:
        raise ValidationFailedError(
            [{"field": "format", "message": "one of: json, csv, table", "value": fmt}]
        )
    resources: Resources = request.state.resources
    now = resources.clock.now()
    texts = Query(params)
    try:
        query = parse_query(
            name,
            now=now,
            since=texts.text("since"),  # empty means not given, like every text filter
            until=texts.text("until"),
            at=texts.text("at"),
            group_by=params.get("groupBy"),  # empty: totals, no grouping
            team=_report_team(request),
        )
    except ValidationFailedError as exc:
        raise _api_fields(exc) from None
    report = await run_report(resources.database, query, now=now)
    body = render(report, fmt, section=texts.text("section"))
    return Response(body, media_type=_MEDIA_TYPES[fmt])


ROUTES = [Route("/reports/{name}", get_report, methods=["GET"])]

_DOCUMENT = {
    "type": "object",
    "required": ["report", "generatedAt", "parameters", "sections"],
    "properties": {
        "report": {"type": "string"},
        "generatedAt": {"type": "string"},
        "parameters": {"type": "object"},
        "sections": {"type": "object"},
    },
}


def openapi_paths(_components: dict[str, Any]) -> dict[str, Any]:
    content = {
        "application/json": {"schema": _DOCUMENT},
        "text/csv": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
    }
    name = _path("name")
    name["schema"] = {"type": "string", "enum": list(REPORT_NAMES)}
    time = "ISO 8601 (naive = UTC) or an age before now: 30m, 24h, 7d, 2w"
    return {
        "/api/reports/{name}": {
            "get": {
                **_operation(
                    "A report from the SQL store: fleet, usage, provisioning, reliability",
                    {
                        "200": {"description": "The report", "content": content},
                        **_errors(401, 404, 422),
                    },
                    parameters=[
                        name,
                        _query("since", f"Window start (default: 7 days before until); {time}"),
                        _query("until", f"Window end, exclusive (default: now); {time}"),
                        _query("at", f"fleet: the moment to count at (default: now); {time}"),
                        _query("groupBy", "Comma-separated dimensions; empty for totals"),
                        _query("format", "Output format", enum=["json", "csv", "table"]),
                        _query("section", "Only this section (CSV: the first by default)"),
                        _query(
                            "team",
                            "Only this team's instances (admins; other keys get their own "
                            "team's report; a team's reliability report leaves out webhooks)",
                            type="string",
                            pattern=TEAM_QUERY_PATTERN,
                        ),
                    ],
                ),
                "operationId": "getReport",
            }
        }
    }


EXTRA_PATHS.append(openapi_paths)
