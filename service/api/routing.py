"""One Starlette route per path, whatever its methods.

Starlette answers a request whose path matches but whose method does not with 405 and an
`Allow` header naming the methods of the first route that matched the path. With one
route per (path, method), `OPTIONS /api/instances/{id}` answered `Allow: GET, HEAD`
though DELETE and PATCH exist there too; one route holding every method of its path
makes the 405 name them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, handlers: Mapping[str, Endpoint]) -> Route:
    """A route answering each method in `handlers` with its handler (HEAD with GET's)."""
    table = dict(handlers)
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return Route(path, dispatch, methods=list(handlers))
