"""Admin and test-hook routes under `/_sim` (same bearer auth as the API; never faulted)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from service.clock import ManualClock
from service.simulator.errors import SimError, invalid
from service.simulator.json_responses import json_response
from service.simulator.render import render_instance
from service.simulator.routes import read_json

if TYPE_CHECKING:
    from service.simulator.simulator import Simulator


async def _object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


class AdminRoutes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def table(self) -> list[web.RouteDef]:
        return [
            web.get("/state", self.state),
            web.get("/faults", self.get_faults),
            web.put("/faults", self.put_faults),
            web.get("/readings", self.get_readings),
            web.put("/readings", self.put_readings),
            web.get("/capacity", self.get_capacity),
            web.put("/capacity", self.put_capacity),
            web.get("/instances/{id}", self.get_instance),
            web.post("/instances/{id}/reclaim", self.reclaim),
            web.post("/instances/{id}/status", self.set_status),
            web.post("/instances/{id}/app", self.set_app),
            web.post("/tick", self.tick),
            web.post("/clock/advance", self.advance_clock),
            web.post("/reset", self.reset),
        ]

    async def state(self, request: web.Request) -> web.Response:
        await self.sim.refresh()
        by_status: dict[str, int] = {}
        for inst in self.sim.instances():
            by_status[inst.status] = by_status.get(inst.status, 0) + 1
        stats = self.sim.push_stats
        return json_response(
            {
                "now": self.sim.clock.now().isoformat(),
                "instances": len(self.sim.state.instances),
                "byStatus": by_status,
                "requestCount": self.sim.request_count,
                "requestsByPath": dict(self.sim.requests_by_path),
                "faults": self.sim.faults.to_json(),
                "readings": self.sim.readings.to_json(),
                "push": stats.to_json() if stats is not None else None,
                "gatewayUrl": self.sim.gateway_url,
            }
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.sim.faults.to_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            self.sim.faults.update(await _object(request))
        except ValueError as exc:
            raise invalid("faults", str(exc)) from None
        return json_response(self.sim.faults.to_json())

    async def get_readings(self, request: web.Request) -> web.Response:
        return json_response(self.sim.readings.to_json())

    async def put_readings(self, request: web.Request) -> web.Response:
        try:
            self.sim.readings.update(await _object(request))
        except ValueError as exc:
            raise invalid("readings", str(exc)) from None
        return json_response(self.sim.readings.to_json())

    async def get_capacity(self, request: web.Request) -> web.Response:
        return json_response({"pools": self.sim.state.capacity.snapshot()})

    async def put_capacity(self, request: web.Request) -> web.Response:
        body = await _object(request)
        cluster_id = body.get("clusterId")
        count = body.get("count")
        product_id = body.get("productId")
        spot = body.get("spot", False)
        if not isinstance(cluster_id, str) or not cluster_id:
            raise invalid("clusterId", "is required")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise invalid("count", "must be a non-negative integer")
        if product_id is not None and not isinstance(product_id, str):
            raise invalid("productId", "must be a string")
        if not isinstance(spot, bool):
            raise invalid("spot", "must be a boolean")
        try:
            self.sim.set_capacity(cluster_id, count, product_id or None, spot)
        except ValueError as exc:
            raise SimError(400, "RESOURCE_NOT_FOUND", str(exc)) from None
        return json_response({"pools": self.sim.state.capacity.snapshot()})

    async def get_instance(self, request: web.Request) -> web.Response:
        await self.sim.refresh()
        inst = self.sim.state.get(request.match_info["id"])
        return json_response(
            {
                "instance": render_instance(inst),
                "sim": {
                    "appUp": inst.app_up,
                    "appNever": inst.app_never,
                    "plan": [value for _, value in inst.plan],
                    "holdsCapacity": inst.holds_capacity,
                    "spotPool": inst.spot,
                    # Unix seconds (fractional) it last became `running`: benchmarks time from it.
                    "runningSince": inst.last_started_at,
                },
            }
        )

    async def reclaim(self, request: web.Request) -> web.Response:
        await self.sim.refresh()
        self.sim.reclaim(request.match_info["id"])
        return json_response({})

    async def set_status(self, request: web.Request) -> web.Response:
        body = await _object(request)
        status = body.get("status")
        if not isinstance(status, str):
            raise invalid("status", "is required")
        error = body.get("statusError")
        status_error: tuple[str, str] | None = None
        if isinstance(error, dict):
            status_error = (str(error.get("state", "")), str(error.get("message", "")))
        elif error is not None:
            raise invalid("statusError", "must be an object {state, message}")
        spot_status = body.get("spotStatus")
        if spot_status is not None and not isinstance(spot_status, str):
            raise invalid("spotStatus", "must be a string")
        await self.sim.refresh()
        self.sim.set_status(
            request.match_info["id"], status, hold=bool(body.get("hold", False)),
            status_error=status_error, spot_status=spot_status,
        )
        await self.sim.refresh()
        return json_response({})

    async def set_app(self, request: web.Request) -> web.Response:
        body = await _object(request)
        if "startupDelay" not in body:
            raise invalid("startupDelay", "is required (seconds, or null for never)")
        delay = body["startupDelay"]
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                                  or delay < 0):
            raise invalid("startupDelay", "must be a non-negative number or null")
        self.sim.set_app_startup_delay(request.match_info["id"], delay)
        await self.sim.refresh()
        return json_response({})

    async def tick(self, request: web.Request) -> web.Response:
        await self.sim.tick()
        return json_response({})

    async def advance_clock(self, request: web.Request) -> web.Response:
        clock = self.sim.clock
        if not isinstance(clock, ManualClock):
            raise SimError(409, "CONFLICT", "the simulator runs on a real clock")
        seconds = (await _object(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise invalid("seconds", "must be a non-negative number")
        clock.advance(seconds)
        await self.sim.tick()
        return json_response({"now": clock.now().isoformat()})

    async def reset(self, request: web.Request) -> web.Response:
        await self.sim.reset()
        return json_response({})
