"""`novita-lifecycle simulate`: run the Novita simulator alone until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click

from service.settings import decode_webhook_secret
from service.simulator.catalogue import catalogue_markdown
from service.simulator.config import DEFAULT_DWELL, SimulatorConfig
from service.simulator.faults import Faults
from service.simulator.readings import CHOICES, Readings
from service.simulator.simulator import Simulator


def _check_secret(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            decode_webhook_secret(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _parse_dwell(ctx: click.Context, param: click.Parameter, value: tuple[str, ...],
                 ) -> dict[str, float]:
    dwell = {}
    for item in value:
        status, sep, seconds = item.partition("=")
        if not sep or status not in DEFAULT_DWELL:
            raise click.BadParameter(
                f"{item!r}: use STATUS=SECONDS with STATUS one of {', '.join(DEFAULT_DWELL)}"
            )
        try:
            dwell[status] = float(seconds)
        except ValueError:
            raise click.BadParameter(f"{item!r}: SECONDS must be a number") from None
        if dwell[status] < 0:
            raise click.BadParameter(f"{item!r}: SECONDS must be >= 0")
    return dwell


RATE = click.FloatRange(0.0, 1.0)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8089, show_default=True, type=int, help="Port (0 = any free).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random choice.")
@click.option("--api-key", "api_keys", multiple=True,
              help="Accepted bearer token (repeatable). Default: accept any non-empty token.")
@click.option("--latency", default=0.0, type=click.FloatRange(0), help="Seconds added per request.")
@click.option("--error-rate", default=0.0, type=RATE, help="Chance of 500 UNKNOWN per request.")
@click.option("--rate-limit-rate", default=0.0, type=RATE,
              help="Chance of 429 RATE_LIMIT_EXCEEDED (with Retry-After) per request.")
@click.option("--retry-after", default=1, type=click.IntRange(0), show_default=True,
              help="Retry-After seconds on injected 429s.")
@click.option("--hang-rate", default=0.0, type=RATE,
              help="Chance a request hangs (--hang-seconds), then answers 504.")
@click.option("--hang-seconds", default=300.0, type=click.FloatRange(0), show_default=True)
@click.option("--create-500-after-create", default=0, type=click.IntRange(0),
              help="The next N creates create the instance, then answer 500.")
@click.option("--action-500-after-action", default=0, type=click.IntRange(0),
              help="The next N start/stop/restart/delete take effect, then answer 500.")
@click.option("--malformed-products", default=0, type=click.IntRange(0),
              help="List N products no client can parse among the real ones.")
@click.option("--rate-limit-per-minute", default=None, type=click.IntRange(1),
              help="Allow N requests per minute, then 429 with Retry-After. Default: off.")
@click.option("--dwell-scale", default=1.0, type=click.FloatRange(0), show_default=True,
              help="Multiply every status dwell time (0 = transitions are immediate).")
@click.option("--dwell", "dwell", multiple=True, callback=_parse_dwell, metavar="STATUS=SECONDS",
              help="Dwell time of one status, e.g. pulling=10 (repeatable).")
@click.option("--app-startup-delay", default=2.0, type=click.FloatRange(0), show_default=True,
              help="Seconds from running until port endpoints answer.")
@click.option("--removed-linger", default=30.0, type=click.FloatRange(0), show_default=True,
              help="Seconds a removed instance stays visible before it is not found.")
@click.option("--not-found-status", default="400", type=click.Choice(["400", "404"]),
              show_default=True, help="HTTP status for an unknown instance id.")
@click.option("--capacity", default=50, type=click.IntRange(0), show_default=True,
              help="Free on-demand slots per product x cluster.")
@click.option("--spot-capacity", default=20, type=click.IntRange(0), show_default=True,
              help="Free spot slots per product x cluster.")
@click.option("--spot-reclaim-rate", default=0.0, type=RATE,
              help="Chance per tick that a running spot instance is reclaimed.")
@click.option("--push-url", default=None, help="POST signed status events to this URL.")
@click.option("--push-secret", default=None, callback=_check_secret,
              help="whsec_<base64> secret that signs pushed events.")
@click.option("--push-drop-rate", default=0.0, type=RATE)
@click.option("--push-duplicate-rate", default=0.0, type=RATE)
@click.option("--push-reorder-rate", default=0.0, type=RATE)
@click.option("--page-base", default="0", show_default=True,
              type=click.Choice(CHOICES["page_base"]),
              help="First list page: 0; 1 (0 = the same page); 1-strict (0 refused).")
@click.option("--not-found", default=None, type=click.Choice(CHOICES["not_found"]),
              help="How a missing instance or template answers (default 400, or what "
                   "--not-found-status says).")
@click.option("--error-reason", default="field", show_default=True,
              type=click.Choice(CHOICES["error_reason"]),
              help="Error bodies with a `reason`, or the token only in `message`.")
@click.option("--regions", "regions_form", default="names", show_default=True,
              type=click.Choice(CHOICES["regions"]),
              help="Product regions as display names, codes, cluster ids or objects.")
@click.option("--action-body", default="state", show_default=True,
              type=click.Choice(CHOICES["action_body"]),
              help="Start/stop answers: {instanceId, state}, {} or no body.")
@click.option("--name-filter", default="substring", show_default=True,
              type=click.Choice(CHOICES["name_filter"]),
              help="The instance list's name filter: substring, exact, or ignored.")
@click.option("--print-catalogue", is_flag=True, help="Print the catalogue as markdown and exit.")
def simulate(
    host: str, port: int, seed: int, api_keys: tuple[str, ...], latency: float,
    error_rate: float, rate_limit_rate: float, retry_after: int, hang_rate: float,
    hang_seconds: float, create_500_after_create: int, action_500_after_action: int,
    malformed_products: int, rate_limit_per_minute: int | None,
    dwell_scale: float, dwell: dict[str, float], app_startup_delay: float, removed_linger: float,
    not_found_status: str, capacity: int, spot_capacity: int, spot_reclaim_rate: float,
    push_url: str | None, push_secret: str | None, push_drop_rate: float,
    push_duplicate_rate: float, push_reorder_rate: float, page_base: str, not_found: str | None,
    error_reason: str, regions_form: str, action_body: str, name_filter: str,
    print_catalogue: bool,
) -> None:
    """Run the Novita GPU API v1 simulator (fake provider) on HOST:PORT."""
    if print_catalogue:
        click.echo(catalogue_markdown(), nl=False)
        return
    if push_url and not push_secret:
        raise click.BadParameter("--push-url needs --push-secret", param_hint="--push-secret")
    config = SimulatorConfig(
        api_keys=api_keys,
        seed=seed,
        dwell_scale=dwell_scale,
        dwell=dwell,
        app_startup_delay=app_startup_delay,
        removed_linger=removed_linger,
        not_found_status=int(not_found_status),
        capacity_on_demand=capacity,
        capacity_spot=spot_capacity,
        spot_reclaim_rate=spot_reclaim_rate,
        push_url=push_url,
        push_secret=push_secret,
        push_drop_rate=push_drop_rate,
        push_duplicate_rate=push_duplicate_rate,
        push_reorder_rate=push_reorder_rate,
        readings=Readings(
            page_base=page_base,
            not_found=not_found or ("404-json" if not_found_status == "404" else "400"),
            error_reason=error_reason,
            regions=regions_form,
            action_body=action_body,
            name_filter=name_filter,
        ),
    )
    faults = Faults(
        latency=latency,
        error_rate=error_rate,
        rate_limit_rate=rate_limit_rate,
        retry_after=retry_after,
        hang_rate=hang_rate,
        hang_seconds=hang_seconds,
        create_500_after_create=create_500_after_create,
        action_500_after_action=action_500_after_action,
        malformed_products=malformed_products,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_run(config, faults, host, port))


async def _run(config: SimulatorConfig, faults: Faults, host: str, port: int) -> None:
    sim = Simulator(config)
    sim.faults = faults
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signum, stop.set)
    await sim.start(host=host, port=port)
    click.echo(f"Novita simulator: {sim.base_url}")
    click.echo(f"  admin: {sim.admin_url}   gateway: {sim.gateway_url}")
    click.echo("  auth: " + ("configured API keys" if config.api_keys else "any bearer token"))
    readings = ", ".join(f"{k}={v}" for k, v in sim.readings.to_json().items())
    click.echo(f"  readings: {readings}")
    try:
        await stop.wait()
    finally:
        await sim.stop()
        click.echo("Novita simulator stopped.")
