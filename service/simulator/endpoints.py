"""Port mappings that really answer on loopback, like Novita's gateway (docs/novita-facts.md).

- HTTP ports go through one shared gateway listener: `http://<host>:<gw>/<instanceId>/<port>/`
  answers 502 (a gateway error page) until the instance's app is up, then 200.
- TCP ports get their own socket per instance x port, bound when the instance starts running
  (so the endpoint is known and refuses connections) and listening once the app is up;
  port 22 greets with an SSH banner, other ports echo. Leaving `running` closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from service.simulator.machine import PortMapping, SimInstance

logger = logging.getLogger(__name__)

SSH_BANNER = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n"
BAD_GATEWAY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    "</center><hr><center>novita-gateway (simulated)</center></body></html>"
)


@dataclass
class _TcpPort:
    sock: socket.socket | None
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Endpoints:
    """Owns the gateway listener and every instance's TCP listeners."""

    def __init__(
        self,
        host: str,
        lookup: Callable[[str], SimInstance | None],
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._host = host
        self._lookup = lookup
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self._gateway_port = 0
        self._tcp: dict[str, dict[int, _TcpPort]] = {}

    async def start(self, port: int = 0) -> None:
        """Listen for the gateway on `port` (a restored world's), or a free one if taken."""
        app = web.Application()
        app.router.add_route("*", "/{instance_id}/{port:\\d+}", self._gateway)
        app.router.add_route("*", "/{instance_id}/{port:\\d+}/{tail:.*}", self._gateway)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, port).start()
        except OSError:
            if not port:
                raise
            logger.info("simulator.gateway_port_taken port=%s", port)
            await web.TCPSite(self._runner, self._host, 0).start()
        self._gateway_port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for instance_id in list(self._tcp):
            await self.close(instance_id)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def gateway_url(self) -> str:
        return f"http://{self._host}:{self._gateway_port}"

    def allocate(
        self, inst: SimInstance, preferred: Mapping[int, int] | None = None
    ) -> list[PortMapping]:
        """Reserve endpoints for a running instance; TCP sockets bind now, listen later.

        `preferred` maps an instance port to the local port it had before a restart: it is
        taken again when free, so endpoints a client learned keep answering.
        """
        self._discard(inst.id)
        mappings = []
        ports: dict[int, _TcpPort] = {}
        for spec in inst.ports:
            if spec.type == "http":
                endpoint = f"{self.gateway_url}/{inst.id}/{spec.port}/"
            else:
                sock = self._bind((preferred or {}).get(spec.port, 0))
                ports[spec.port] = _TcpPort(sock)
                endpoint = f"{self._host}:{sock.getsockname()[1]}"
            mappings.append(PortMapping(spec.port, spec.type, endpoint))
        self._tcp[inst.id] = ports
        return mappings

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, port))
        except OSError:
            if not port:
                sock.close()
                raise
            sock.bind((self._host, 0))
        sock.setblocking(False)
        return sock

    async def open(self, inst: SimInstance) -> None:
        """The app came up: TCP endpoints start accepting."""
        for port, tcp in self._tcp.get(inst.id, {}).items():
            if tcp.server is not None or tcp.sock is None:
                continue
            handler = self._tcp_handler(port, tcp)
            tcp.server = await asyncio.start_server(handler, sock=tcp.sock)
            tcp.sock = None  # the server owns it now

    async def close(self, instance_id: str) -> None:
        """The instance left `running`: drop connections, stop listening, free the ports."""
        ports = self._tcp.pop(instance_id, {})
        for tcp in ports.values():
            for writer in list(tcp.writers):
                writer.close()
            if tcp.server is not None:
                tcp.server.close()
            if tcp.sock is not None:
                tcp.sock.close()
            if tcp.tasks:
                await asyncio.wait(list(tcp.tasks), timeout=1.0)
            if tcp.server is not None:
                await tcp.server.wait_closed()

    def is_listening(self, instance_id: str) -> bool:
        return any(tcp.server is not None for tcp in self._tcp.get(instance_id, {}).values())

    def _discard(self, instance_id: str) -> None:
        for tcp in self._tcp.pop(instance_id, {}).values():
            if tcp.sock is not None:
                tcp.sock.close()

    def _tcp_handler(
        self, port: int, tcp: _TcpPort
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                tcp.tasks.add(task)
            tcp.writers.add(writer)
            try:
                if port == 22:
                    writer.write(SSH_BANNER)
                while data := await reader.read(4096):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                tcp.writers.discard(writer)
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
                if task is not None:
                    tcp.tasks.discard(task)

        return handle

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        await self._refresh()
        inst = self._lookup(request.match_info["instance_id"])
        if inst is None:
            return web.Response(status=404, text="404 page not found\n")
        port = int(request.match_info["port"])
        mapped = any(m.port == port and m.type == "http" for m in inst.mappings)
        if inst.status != "running" or not inst.app_up or not mapped:
            return web.Response(status=502, text=BAD_GATEWAY_PAGE, content_type="text/html")
        return web.json_response(
            {
                "instanceId": inst.id,
                "port": port,
                "path": "/" + request.match_info.get("tail", ""),
                "method": request.method,
                "app": "simulated",
            }
        )
