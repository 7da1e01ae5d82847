"""Handlers of the simulated Novita GPU API v1 (paths relative to `/gpu-instance/openapi/v1`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from service.simulator import catalogue, listing
from service.simulator.catalogue import RegistryAuth
from service.simulator.errors import SimError, invalid
from service.simulator.json_responses import json_response
from service.simulator.machine import Change, SimInstance
from service.simulator.render import render_instance
from service.simulator.validation import parse_create

if TYPE_CHECKING:
    from service.simulator.simulator import Simulator

Operation = Callable[[SimInstance, float, float], list[Change]]


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", "is not valid JSON") from None


def _instance_id(body: Any) -> str:
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    value = body.get("instanceId")
    if not isinstance(value, str) or not value:
        raise invalid("instanceId", "is required")
    return value


class V1Routes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def table(self) -> list[web.RouteDef]:
        return [
            web.get("/clusters", self.clusters),
            web.get("/products", self.products),
            web.get("/cpu/products", self.cpu_products),
            web.get("/template", self.template),
            web.get("/templates", self.templates),
            web.get("/networkstorages/list", self.network_storages),
            web.get("/repository/auths", self.registry_auths),
            web.post("/repository/auth/save", self.save_registry_auth),
            web.post("/repository/auth/delete", self.delete_registry_auth),
            web.post("/gpu/instance/create", self.create),
            web.get("/gpu/instance", self.get_instance),
            web.get("/gpu/instances", self.list_instances),
            web.post("/gpu/instance/start", self.start),
            web.post("/gpu/instance/stop", self.stop),
            web.post("/gpu/instance/restart", self.restart),
            web.post("/gpu/instance/delete", self.delete),
            web.post("/gpu/instance/migrate", self.migrate),
        ]

    # -- catalogue ------------------------------------------------------------------------

    async def clusters(self, request: web.Request) -> web.Response:
        return json_response({"data": listing.clusters()})

    async def products(self, request: web.Request) -> web.Response:
        found = listing.products(request.query, self.sim.state.capacity, self.sim.readings)
        found += listing.malformed_products(self.sim.faults.malformed_products)
        return json_response({"data": found})

    async def cpu_products(self, request: web.Request) -> web.Response:
        found = listing.cpu_products(request.query, self.sim.state.capacity)
        return json_response({"data": found})

    async def template(self, request: web.Request) -> web.Response:
        template_id = request.query.get("templateId", "")
        if not template_id:
            raise invalid("templateId", "is required")
        template = catalogue.template_by_id(template_id)
        if template is None:
            raise SimError(
                400, "TEMPLATE_NOT_FOUND", f"template {template_id} not found", not_found=True
            )
        return json_response({"template": template.to_wire()})

    async def templates(self, request: web.Request) -> web.Response:
        return json_response(listing.templates(request.query, self.sim.readings))

    async def network_storages(self, request: web.Request) -> web.Response:
        return json_response(listing.network_storages(request.query, self.sim.readings))

    async def registry_auths(self, request: web.Request) -> web.Response:
        return json_response({"data": [a.to_wire() for a in self.sim.state.registry_auths]})

    async def save_registry_auth(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        fields = {}
        for key in ("name", "username", "password"):
            value = body.get(key)
            if not isinstance(value, str) or not value:
                raise invalid(key, "is required")
            fields[key] = value
        new_id = self.sim.state.new_registry_auth_id()
        self.sim.state.registry_auths.append(RegistryAuth(new_id, **fields))
        return json_response({})

    async def delete_registry_auth(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        auth_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(auth_id, str) or not auth_id:
            raise invalid("id", "is required")
        auths = self.sim.state.registry_auths
        if not any(a.id == auth_id for a in auths):
            raise SimError(400, "RESOURCE_NOT_FOUND", f"registry auth {auth_id} not found")
        auths[:] = [a for a in auths if a.id != auth_id]
        return json_response({})

    # -- instances ------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        req = parse_create(await read_json(request))
        await self.sim.refresh()
        mono, unix = self.sim.now()
        inst, changes = self.sim.state.create(req, mono, unix)
        self.sim.apply(changes)
        if self.sim.injector.take_create_500():
            # The instance exists; the caller is told otherwise (an ambiguous failure).
            raise SimError(500, "UNKNOWN", "internal error")
        return json_response({"id": inst.id})

    async def get_instance(self, request: web.Request) -> web.Response:
        instance_id = request.query.get("instanceId", "")
        if not instance_id:
            raise invalid("instanceId", "is required")
        await self.sim.refresh()
        return json_response(render_instance(self.sim.state.get(instance_id)))

    async def list_instances(self, request: web.Request) -> web.Response:
        await self.sim.refresh()
        return json_response(
            listing.instances(request.query, self.sim.state.instances.values(), self.sim.readings)
        )

    async def _operate(self, request: web.Request, operation: Operation) -> str:
        instance_id = _instance_id(await read_json(request))
        await self.sim.refresh()
        inst = self.sim.state.get(instance_id)
        mono, unix = self.sim.now()
        self.sim.apply(operation(inst, mono, unix))
        await self.sim.refresh()  # open or close listeners before answering
        if self.sim.injector.take_action_500():
            raise SimError(500, "UNKNOWN", "internal error")  # done, but the caller is not told
        return instance_id

    def _action_answer(self, state: dict[str, str] | None) -> web.Response:
        """Per the `action_body` reading: `{instanceId, state}` (start/stop), `{}`, or none."""
        reading = self.sim.readings.action_body
        if reading == "none":
            return web.Response(status=200)
        return json_response(state if state is not None and reading == "state" else {})

    async def start(self, request: web.Request) -> web.Response:
        instance_id = await self._operate(request, self.sim.state.start)
        return self._action_answer({"instanceId": instance_id, "state": "toStart"})

    async def stop(self, request: web.Request) -> web.Response:
        instance_id = await self._operate(request, self.sim.state.stop)
        return self._action_answer({"instanceId": instance_id, "state": "toStop"})

    async def restart(self, request: web.Request) -> web.Response:
        await self._operate(request, self.sim.state.restart)
        return self._action_answer(None)

    async def delete(self, request: web.Request) -> web.Response:
        await self._operate(request, self.sim.state.delete)
        return self._action_answer(None)

    async def migrate(self, request: web.Request) -> web.Response:
        await self._operate(request, self.sim.state.migrate)
        return json_response({})
