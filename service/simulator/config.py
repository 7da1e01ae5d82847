"""Simulator configuration: fixed for the life of one `Simulator` (faults change at run time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from service.simulator.readings import Readings

# Seconds spent in each transitional status (and spot status) before the next step.
# Real timings are unpublished (docs/novita-facts.md); these keep a demo watchable.
DEFAULT_DWELL: Mapping[str, float] = MappingProxyType(
    {
        "pending": 0.5,
        "toCreate": 1.0,
        "creating": 2.0,
        "pulling": 3.0,
        "toStart": 1.0,
        "starting": 2.0,
        "toStop": 1.0,
        "stopping": 2.0,
        "toRestart": 1.0,
        "restarting": 2.0,
        "toRemove": 1.0,
        "removing": 2.0,
        "toReset": 1.0,
        "resetting": 2.0,
        "migrating": 3.0,
        # spotStatus steps of a reclaim
        "notified": 5.0,
        "reclaiming": 3.0,
    }
)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the fake Novita behaves. Every field has a usable default.

    `dwell` overrides entries of `DEFAULT_DWELL`; `dwell_scale` multiplies every dwell
    (0 = all transitions happen on the next tick). `app_startup_delay` is the time from
    `running` until the container's ports answer; `None` means never.
    """

    api_keys: tuple[str, ...] = ()  # empty: accept any non-empty bearer token
    seed: int = 0
    dwell: Mapping[str, float] = field(default_factory=dict)
    dwell_scale: float = 1.0
    app_startup_delay: float | None = 2.0
    removed_linger: float = 30.0
    not_found_status: int = 400  # 404: shorthand for readings.not_found = "404-json"
    # The reading of each ambiguity played at start (and after a reset): see `readings`.
    readings: Readings = field(default_factory=Readings)
    capacity_on_demand: int = 50  # free slots per product x cluster, on-demand and monthly
    capacity_spot: int = 20  # free slots per product x cluster in the separate spot pool
    push_url: str | None = None
    push_secret: str | None = None  # whsec_<base64>
    push_drop_rate: float = 0.0
    push_duplicate_rate: float = 0.0
    push_reorder_rate: float = 0.0
    push_concurrency: int = 1  # >1 lets deliveries overtake each other
    push_timeout: float = 5.0
    spot_reclaim_rate: float = 0.0  # chance per tick that a running spot instance is reclaimed
    endpoint_host: str = "127.0.0.1"
    tick_interval: float = 0.15  # background ticking, only with a real clock
    auto_tick: bool | None = None  # None: tick in the background unless the clock is manual

    def __post_init__(self) -> None:
        if self.not_found_status not in (400, 404):
            raise ValueError("not_found_status must be 400 or 404")
        if self.dwell_scale < 0:
            raise ValueError("dwell_scale must be >= 0")
        unknown = set(self.dwell) - set(DEFAULT_DWELL)
        if unknown:
            raise ValueError(f"unknown dwell statuses: {sorted(unknown)}")
        for name in ("push_drop_rate", "push_duplicate_rate", "push_reorder_rate",
                     "spot_reclaim_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    def initial_readings(self) -> Readings:
        readings = self.readings.copy()
        if self.not_found_status == 404 and readings.not_found == "400":
            readings.not_found = "404-json"
        return readings

    def dwell_for(self, status: str) -> float:
        seconds = self.dwell.get(status, DEFAULT_DWELL.get(status, 0.0))
        return seconds * self.dwell_scale
