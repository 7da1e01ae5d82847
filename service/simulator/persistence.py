"""Keeping the simulator's world across restarts: its instances, their clocks, capacity, ids.

`serve --simulator` is a demo users restart. A world that started empty on every start
handed out the ids of the previous run again while the database still held them, so the
service's rows and the simulator's instances disagreed. Here the world becomes a JSON
document (`snapshot`), is read back into a new simulator (`restore`, before it starts, then
`reopen_endpoints` once it listens), and `WorldKeeper` saves it shortly after every change
and once more at shutdown. Where the document is kept is the caller's business (the
service keeps it in its own database, so a fresh database starts a fresh world).

Times: the simulator schedules on the monotonic clock, which restarts with the process, so
monotonic times are saved as Unix times and turned back into monotonic ones on restore.
Wall time keeps running while the service is down: an instance that was `pulling` when
it stopped is `running` (or further) when it starts again, as at the real provider.
Randomness restarts from a fresh seed: an id handed out just before a crash (after the last
save) is never handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from service.simulator.catalogue import RegistryAuth
from service.simulator.machine import PortMapping, PortSpec, SimInstance
from service.simulator.simulator import Simulator

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# SimInstance fields holding monotonic times (saved as Unix seconds).
_MONOTONIC_FIELDS = ("next_at", "app_up_at", "running_since", "gone_at")
_INSTANCE_FIELDS = {f.name for f in dataclasses.fields(SimInstance)}

World = dict[str, Any]
SaveWorld = Callable[[World], Awaitable[None]]


def snapshot(sim: Simulator) -> World:
    """The world as a JSON-ready document."""
    mono, unix = sim.now()
    offset = unix - mono  # monotonic + offset = Unix time, for this process
    instances = []
    for inst in sim.instances():
        raw = dataclasses.asdict(inst)
        for name in _MONOTONIC_FIELDS:
            if raw[name] is not None:
                raw[name] = raw[name] + offset
        instances.append(raw)
    return {
        "version": FORMAT_VERSION,
        "savedAt": unix,
        "sequence": sim.state.sequence,
        "gatewayPort": _port_of(sim.gateway_url),
        "instances": instances,
        "capacity": [
            [pool["productId"], pool["clusterId"], pool["spot"], pool["free"]]
            for pool in sim.state.capacity.snapshot()
        ],
        "registryAuths": [dataclasses.asdict(auth) for auth in sim.state.registry_auths],
    }


def restore(sim: Simulator, world: World) -> None:
    """Load a saved world into a simulator that has not started yet."""
    if world.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown simulator world format {world.get('version')!r}")
    mono, unix = sim.now()
    offset = unix - mono
    instances = [_instance(raw, offset) for raw in world["instances"]]
    sim.state.instances.clear()
    sim.state.instances.update((inst.id, inst) for inst in instances)
    sim.state.capacity.restore(
        [(str(p), str(c), bool(s), int(n)) for p, c, s, n in world["capacity"]]
    )
    sim.state.registry_auths = [RegistryAuth(**raw) for raw in world["registryAuths"]]
    sim.state.resume(int(world["sequence"]), secrets.randbits(64))


def gateway_port(world: World | None) -> int:
    """The gateway port the saved world's HTTP endpoints used (0: any)."""
    if not world:
        return 0
    port = world.get("gatewayPort")
    return port if isinstance(port, int) and 0 < port < 65536 else 0


async def reopen_endpoints(sim: Simulator, world: World) -> None:
    """After `start`: give running instances their endpoints again, on the same local
    ports when those are free, listening at once when their app was up."""
    saved = {raw["id"]: raw.get("mappings") or [] for raw in world["instances"]}
    for inst in sim.instances():
        if inst.status != "running":
            continue
        preferred = {
            int(m["port"]): port
            for m in saved.get(inst.id, [])
            if m.get("type") != "http" and (port := _port_of(str(m.get("endpoint", ""))))
        }
        inst.mappings = sim.endpoints.allocate(inst, preferred)
        if inst.app_up:
            await sim.endpoints.open(inst)
    await sim.refresh()


def _instance(raw: dict[str, Any], offset: float) -> SimInstance:
    values = {k: v for k, v in raw.items() if k in _INSTANCE_FIELDS}
    for name in _MONOTONIC_FIELDS:
        if values.get(name) is not None:
            values[name] = float(values[name]) - offset
    values["ports"] = [PortSpec(int(p["port"]), str(p["type"])) for p in raw.get("ports", [])]
    values["mappings"] = [
        PortMapping(int(m["port"]), str(m["type"]), str(m["endpoint"]))
        for m in raw.get("mappings", [])
    ]
    values["plan"] = [(field, value) for field, value in raw.get("plan", [])]
    error = raw.get("status_error")
    values["status_error"] = (str(error[0]), str(error[1])) if error else None
    values["network_storages"] = [(str(a), str(b)) for a, b in raw.get("network_storages", [])]
    return SimInstance(**values)


def _port_of(address: str) -> int:
    """The port of `http://host:port[/...]` or `host:port` (0 when there is none)."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    _, _, port = rest.rpartition(":")
    return int(port) if port.isdigit() else 0


class WorldKeeper:
    """Saves the world shortly after each change (changes within `min_interval` seconds
    share one save) and once more when stopped."""

    def __init__(self, sim: Simulator, save: SaveWorld, *, min_interval: float = 0.25) -> None:
        self._sim = sim
        self._save = save
        self._min_interval = min_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sim.on_change = self._wake.set
        self._task = asyncio.create_task(self._run(), name="simulator-world-keeper")

    async def stop(self) -> None:
        self._sim.on_change = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save_now()

    async def save_now(self) -> None:
        try:
            await self._save(snapshot(self._sim))
        except Exception:  # the demo goes on; the next change or the shutdown saves again
            logger.warning("simulator.world_save_failed", exc_info=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.save_now()
            await asyncio.sleep(self._min_interval)
