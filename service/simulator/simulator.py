"""`Simulator`: the fake Novita as one object: HTTP server, clock-driven state, endpoints, push.

State changes are synchronous (`SimState`); this class turns their changes into effects:
capacity bookkeeping, endpoint sockets, and pushed events. `tick()` applies what is due at
the clock's current time; every API read does the same first, so answers are never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from service.clock import Clock, ManualClock, SystemClock
from service.simulator.app import ADMIN_PREFIX, V1_PREFIX, build_app
from service.simulator.config import SimulatorConfig
from service.simulator.endpoints import Endpoints
from service.simulator.faults import FaultInjector, Faults
from service.simulator.machine import Change, SimInstance
from service.simulator.push import Pusher, PushStats
from service.simulator.state import SimState

logger = logging.getLogger(__name__)


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


class Simulator:
    """A faithful local Novita GPU API v1. See `service.simulator` for the admin routes."""

    def __init__(self, config: SimulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock: Clock = clock or SystemClock()
        if self.config.push_url and not self.config.push_secret:
            raise ValueError("push_url needs push_secret (whsec_<base64>)")
        self.state = SimState(self.config)
        self.readings = self.config.initial_readings()
        self._faults = Faults()
        self.injector = FaultInjector(self._faults, self.config.seed, self.clock)
        self.request_count = 0
        self.requests_by_path: Counter[str] = Counter()
        self.endpoints = Endpoints(self.config.endpoint_host, self.instance, self.refresh)
        self.pusher: Pusher | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._next_due: float | None = None
        # Called (synchronously, cheaply) after the world changed: `persistence` saves it.
        self.on_change: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, gateway_port: int = 0,
                    ) -> None:
        self._stopping.clear()
        await self.endpoints.start(gateway_port)
        if self.config.push_url and self.config.push_secret:
            self.pusher = Pusher(
                self.config.push_url,
                self.config.push_secret,
                seed=self.config.seed,
                drop_rate=self.config.push_drop_rate,
                duplicate_rate=self.config.push_duplicate_rate,
                reorder_rate=self.config.push_reorder_rate,
                concurrency=self.config.push_concurrency,
                timeout=self.config.push_timeout,
                wall_time=self._wall_time,
            )
            await self.pusher.start()
        self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._url = f"http://{bound_host}:{bound_port}"
        auto = self.config.auto_tick
        if auto is None:
            auto = not isinstance(self.clock, ManualClock)
        if auto:
            self._ticker = asyncio.create_task(self._tick_forever(), name="sim-ticker")
        logger.info("simulator.started url=%s", self._url)

    async def enable_push(
        self,
        url: str,
        secret: str,
        *,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
    ) -> None:
        """Start (or redirect) event push at run time, e.g. once the receiver's port is known."""
        if self.pusher is not None:
            await self.pusher.stop()
        self.pusher = Pusher(
            url,
            secret,
            seed=self.config.seed,
            drop_rate=drop_rate,
            duplicate_rate=duplicate_rate,
            reorder_rate=reorder_rate,
            concurrency=self.config.push_concurrency,
            timeout=self.config.push_timeout,
            wall_time=self._wall_time,
        )
        await self.pusher.start()

    def _wall_time(self) -> float:
        return self.clock.now().timestamp()

    async def stop(self) -> None:
        self._stopping.set()  # wakes hung requests so the server can shut down at once
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.endpoints.stop()
        if self.pusher is not None:
            await self.pusher.stop()
            self.pusher = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def base_url(self) -> str:
        return self._url + V1_PREFIX

    @property
    def admin_url(self) -> str:
        return self._url + ADMIN_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.endpoints.gateway_url

    # -- faults and capacity --------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self.injector.faults = value

    def set_capacity(
        self, cluster_id: str, count: int, product_id: str | None = None, spot: bool = False
    ) -> None:
        """Set the free slots of a cluster's pools (all products, or one); ValueError if none."""
        if self.state.capacity.set(cluster_id, count, product_id, spot) == 0:
            raise ValueError(
                f"no {'spot' if spot else 'on-demand'} pool for cluster {cluster_id!r}"
                + (f" and product {product_id!r}" if product_id else "")
            )
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def capacity(self, cluster_id: str, product_id: str, spot: bool = False) -> int:
        return self.state.capacity.free(product_id, cluster_id, spot)

    @property
    def push_stats(self) -> PushStats | None:
        return self.pusher.stats if self.pusher is not None else None

    async def drain_push(self) -> None:
        """Wait until every published event has been attempted."""
        if self.pusher is not None:
            await self.pusher.drain()

    # -- instances ------------------------------------------------------------------------

    def instance(self, novita_id: str) -> SimInstance | None:
        return self.state.instances.get(novita_id)

    def instances(self) -> list[SimInstance]:
        return list(self.state.instances.values())

    def reclaim(self, novita_id: str) -> None:
        """Start a spot reclaim: spotStatus notified > reclaiming > terminated, status exited."""
        mono, unix = self.now()
        self.apply(self.state.reclaim(self.state.get(novita_id), mono, unix))

    def set_status(
        self, novita_id: str, status: str, *, hold: bool = False,
        status_error: tuple[str, str] | None = None, spot_status: str | None = None,
    ) -> None:
        """Test hook: jump to `status` now, then follow its natural path unless `hold`."""
        mono, unix = self.now()
        inst = self.state.get(novita_id)
        self.apply(self.state.jump(inst, status, mono, unix, hold=hold,
                                   status_error=status_error, spot_status=spot_status))

    def set_app_startup_delay(self, novita_id: str, seconds: float | None) -> None:
        """Seconds from `running` until the instance's ports answer; None = never."""
        inst = self.state.get(novita_id)
        self.state.machine.set_app_delay(inst, seconds, self.clock.monotonic())
        self._dirty.add(inst.id)
        self._next_due = self.state.next_due()
        self._changed()

    async def reset(self) -> None:
        """Forget every instance, restore capacity, clear faults and counters."""
        async with self._lock:
            for instance_id in list(self.state.instances):
                await self.endpoints.close(instance_id)
            self.state.reset()
            self.readings = self.config.initial_readings()
            self.faults = Faults()
            self.injector.reseed(self.config.seed)
            self.request_count = 0
            self.requests_by_path.clear()
            self._dirty.clear()
            self._next_due = None
        self._changed()

    # -- time -----------------------------------------------------------------------------

    def now(self) -> tuple[float, float]:
        return self.clock.monotonic(), self.clock.now().timestamp()

    async def tick(self) -> None:
        """Apply every transition due now (and random spot reclaims, if configured)."""
        if self.pusher is not None:
            self.pusher.on_tick()  # events held back for reordering are late, not lost
        if self.config.spot_reclaim_rate:
            mono, unix = self.now()
            self.apply(self.state.random_reclaims(self.config.spot_reclaim_rate, mono, unix))
        await self.refresh()

    async def refresh(self) -> None:
        """Bring state up to the clock; cheap when nothing is due."""
        if not self._dirty and (self._next_due is None or self.clock.monotonic() < self._next_due):
            return
        async with self._lock:
            mono, unix = self.now()
            self.apply(self.state.advance(mono, unix))
            while self._dirty:
                await self._reconcile_endpoints(self._dirty.pop())

    def apply(self, changes: list[Change]) -> None:
        """Effects of state changes that need no waiting: capacity, endpoint ports, events."""
        touched: dict[str, SimInstance | None] = {}
        for change in changes:
            inst = self.state.instances.get(change.instance_id)
            touched[change.instance_id] = inst
            if change.field in ("status", "spotStatus") and self.pusher is not None:
                self._publish(change, inst)
        for instance_id, inst in touched.items():
            self._dirty.add(instance_id)
            if inst is None:
                continue
            self.state.sync_capacity(inst)
            if inst.status == "running" and not inst.mappings:
                inst.mappings = self.endpoints.allocate(inst)
            elif inst.status != "running":
                inst.mappings = []
        self._next_due = self.state.next_due()
        if changes:
            self._changed()

    def _publish(self, change: Change, inst: SimInstance | None) -> None:
        assert self.pusher is not None
        event_type = "instance.status_changed" if change.field == "status" else (
            "instance.spot_reclaim"
        )
        self.pusher.publish(
            event_type,
            iso(self.clock.now().timestamp()),
            {
                "instanceId": change.instance_id,
                "name": inst.name if inst is not None else "",
                "status": change.status,
                "spotStatus": change.spot_status,
                "observedAt": iso(change.at),
            },
        )

    async def _reconcile_endpoints(self, instance_id: str) -> None:
        inst = self.state.instances.get(instance_id)
        if inst is None or inst.status != "running":
            await self.endpoints.close(instance_id)
        elif inst.app_up:
            await self.endpoints.open(inst)
        elif self.endpoints.is_listening(instance_id):
            # The app went down and the instance ran again within one tick (a quick restart).
            await self.endpoints.close(instance_id)
            inst.mappings = self.endpoints.allocate(inst)

    async def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to `seconds` of wall time; True if the simulator is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("simulator.tick_failed")
