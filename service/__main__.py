"""Command line: `novita-lifecycle` (also `python -m service`).

Exit codes: 0 success, 1 the command failed (database unreachable or at the wrong schema),
2 bad usage or configuration (one line naming the variable, no traceback).
"""

from __future__ import annotations

import asyncio
import gc
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from service import __version__
from service.auth.cli import keys
from service.errors import ConfigError, DatabaseError, ValidationFailedError
from service.settings import Settings, load_settings
from service.simulator.cli import simulate

if TYPE_CHECKING:
    from service.reports.model import Report
    from service.reports.params import ReportQuery

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _environment_help() -> str:
    lines = ["Environment (also read from ./.env):"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default in (None, ()) else f" [default: {field.default}]"
        lines.append(f"  {name.upper()}: {field.description}{default}")
    return "\b\n" + "\n".join(lines)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"novita-lifecycle: {message}", err=True)
    raise SystemExit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(exc.message, EXIT_CONFIG)


def _masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def _prepare_database(settings: Settings, migrate: bool) -> str:
    """Migrate (if asked) and check the schema; return the revision the database is at."""
    from service.db.engine import Database
    from service.db.migrations import check_schema_is_current, current_revision, upgrade_to_head

    database = Database.from_url(
        settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    try:
        if migrate:
            await upgrade_to_head(database.engine)
        await check_schema_is_current(database.engine)
        return await current_revision(database.engine) or "base"
    finally:
        await database.close()


def run_database_step(settings: Settings, migrate: bool) -> str:
    try:
        return asyncio.run(_prepare_database(settings, migrate))
    except DatabaseError as exc:
        fail(exc.message, EXIT_FAILED)
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        fail(
            f"cannot use the database at {_masked(settings.database_url)}: {reason}",
            EXIT_FAILED,
        )


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=_environment_help(),
)
@click.version_option(__version__, prog_name="novita-lifecycle")
def cli() -> None:
    """Manage GPU instances on Novita.ai: serve the API and workers, migrate, simulate, report."""


@cli.command()
def migrate() -> None:
    """Upgrade DATABASE_URL to the newest schema."""
    settings = settings_or_exit()
    revision = run_database_step(settings, migrate=True)
    click.echo(f"database {_masked(settings.database_url)} is at revision {revision}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--simulator",
    is_flag=True,
    help="Run the built-in Novita simulator in this process and use it instead of Novita.",
)
@click.option("--migrate", "migrate_first", is_flag=True, help="Migrate the database first.")
@click.option(
    "--no-workers",
    is_flag=True,
    help="Serve the HTTP API only (run `novita-lifecycle worker` processes beside it).",
)
def serve(host: str, port: int, simulator: bool, migrate_first: bool, no_workers: bool) -> None:
    """Serve the HTTP API and run all workers."""
    import uvicorn

    from service.app import create_app
    from service.http_protocol import HttpProtocol
    from service.logging import configure_logging, secret_forms

    settings = settings_or_exit(**({"novita_simulator": True} if simulator else {}))
    if settings.novita_api_key is None and not settings.novita_simulator:
        fail(
            "NOVITA_API_KEY is not set: set it to use Novita, or pass --simulator to use the "
            "built-in simulator",
            EXIT_CONFIG,
        )
    configure_logging(settings.log_level, settings.log_format, secrets=secret_forms(settings))
    run_database_step(settings, migrate=migrate_first)
    app = create_app(settings, run_workers=not no_workers)
    # Modules, routes and settings live as long as the process: move them out of the
    # garbage collector's generations so its passes only walk what requests allocate.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        # uvicorn builds each access line's arguments before the logger's level check:
        # below INFO there is no access log to build.
        access_log=settings.log_level in ("DEBUG", "INFO"),
        lifespan="on",
        server_header=False,
        http=HttpProtocol,
        # X-Forwarded-* only from the proxies named (uvicorn would believe any local peer).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
    )


cli.add_command(simulate)
cli.add_command(keys)


@cli.command()
@click.option(
    "--simulator",
    is_flag=True,
    help="Run the built-in Novita simulator in this process and use it instead of Novita.",
)
@click.option("--migrate", "migrate_first", is_flag=True, help="Migrate the database first.")
def worker(simulator: bool, migrate_first: bool) -> None:
    """Run the background workers only (no HTTP); stops cleanly on SIGINT/SIGTERM."""
    from service.logging import configure_logging, secret_forms
    from service.workers.runner import run_workers

    settings = settings_or_exit(**({"novita_simulator": True} if simulator else {}))
    if settings.novita_api_key is None and not settings.novita_simulator:
        fail(
            "NOVITA_API_KEY is not set: set it to use Novita, or pass --simulator to use the "
            "built-in simulator",
            EXIT_CONFIG,
        )
    configure_logging(settings.log_level, settings.log_format, secrets=secret_forms(settings))
    run_database_step(settings, migrate=migrate_first)
    asyncio.run(run_workers(settings))


@cli.command("check-novita")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds per request.")
def check_novita(timeout: float) -> None:
    """Check what this account's Novita API does where the docs are ambiguous.

    Read-only (GET requests only) with NOVITA_API_KEY at NOVITA_API_BASE_URL: prints, for
    each assumption the client makes, what Novita answered, OK or DIFFERS, and what the
    service will do. Exits 1 when a difference is one the service cannot handle.
    """
    from service.novita.contract_check import render_table, run_checks

    settings = settings_or_exit()
    if settings.novita_api_key is None:
        fail("NOVITA_API_KEY is not set: check-novita needs the key to check", EXIT_CONFIG)
    key = settings.novita_api_key.get_secret_value()
    findings = asyncio.run(run_checks(settings.novita_api_base_url, key, request_timeout=timeout))
    click.echo(render_table(findings, settings.novita_api_base_url), nl=False)
    if any(f.blocking for f in findings):
        raise SystemExit(EXIT_FAILED)


# Fields that are arguments, not options, of the command that reports them.
_ARGUMENTS = {"name": "NAME"}


def _field_errors(exc: ValidationFailedError) -> str:
    return "; ".join(
        f"{_ARGUMENTS.get(str(item['field'])) or '--' + str(item['field']).replace('_', '-')}: "
        f"{item['message']}"
        + (f" (got {item['value']!r})" if item.get("value") is not None else "")
        for item in exc.fields
    )


async def _build_report(settings: Settings, query: ReportQuery, now: datetime) -> Report:
    from service.db.engine import Database
    from service.db.migrations import check_schema_is_current
    from service.reports.run import run_report

    database = Database.from_url(
        settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    try:
        await check_schema_is_current(database.engine)
        return await run_report(database, query, now=now)
    finally:
        await database.close()


@cli.command()
@click.argument("name", metavar="NAME")
@click.option("--since", help="Window start: ISO 8601 (naive = UTC) or an age (30m, 24h, 7d).")
@click.option("--until", help="Window end, exclusive (same forms as --since).  [default: now]")
@click.option("--at", "at", help="fleet only: the moment to count at.  [default: now]")
@click.option(
    "--group-by", "group_by", help="Comma-separated dimensions; an empty value gives totals."
)
@click.option("--format", "fmt", default="table", show_default=True, help="table, csv or json.")
@click.option("--section", help="Only this section (CSV prints the first one unless given).")
@click.option("--team", help="Only this team's instances.  [default: every team]")
def report(
    name: str,
    since: str | None,
    until: str | None,
    at: str | None,
    group_by: str | None,
    fmt: str,
    section: str | None,
    team: str | None,
) -> None:
    """Print a report from the SQL store (DATABASE_URL).

    \b
    NAME is one of:
      fleet         instances per status/region/product/billing_mode, now or --at
      usage         GPU-hours and cost (USD) per day/product/region/billing_mode
      provisioning  time to running/ready (p50/p90/p99), success and fallback rates,
                    capacity errors per region x product, failure reasons;
                    --group-by product,region,billing_mode (default: totals)
      reliability   webhooks (received, duplicates, rejected), state changes by source,
                    notifications delivered/failed and delivery latency
    Windowed reports cover the 7 days before --until unless --since is given.
    """
    from service.clock import SystemClock
    from service.reports.params import parse_query
    from service.reports.render import FORMATS, render

    settings = settings_or_exit()
    now = SystemClock().now()
    try:
        if fmt not in FORMATS:
            raise ValidationFailedError(
                [{"field": "format", "message": f"one of: {', '.join(FORMATS)}", "value": fmt}]
            )
        query = parse_query(
            name, now=now, since=since, until=until, at=at, group_by=group_by, team=team
        )
    except ValidationFailedError as exc:
        fail(_field_errors(exc), EXIT_CONFIG)
    try:
        built = asyncio.run(_build_report(settings, query, now))
    except DatabaseError as exc:
        fail(exc.message, EXIT_FAILED)
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        fail(
            f"cannot use the database at {_masked(settings.database_url)}: {reason}",
            EXIT_FAILED,
        )
    try:
        click.echo(render(built, fmt, section=section), nl=False)
    except ValidationFailedError as exc:
        fail(_field_errors(exc), EXIT_CONFIG)


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
