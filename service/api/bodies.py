"""Reading request bodies: size limit, JSON parsing and pydantic validation → clear 4xx.

Every body goes through `service.api.clean_json` (the input gate's parser): what it
refuses never reaches a handler, pydantic or the database.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive

from service.api.clean_json import JsonSyntaxError, UncleanJsonError, loads
from service.errors import MalformedRequestError, PayloadTooLargeError, ValidationFailedError

M = TypeVar("M", bound=BaseModel)
DEFAULT_BODY_LIMIT = 1024 * 1024
# A Content-Length beyond this many digits is refused without converting it.
_MAX_LENGTH_DIGITS = 18


async def read_body(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    return await read_asgi_body(
        request.receive, limit=limit, declared=request.headers.get("content-length")
    )


async def read_asgi_body(
    receive: Receive, *, limit: int = DEFAULT_BODY_LIMIT, declared: str | None = None
) -> bytes:
    """The request body from the ASGI messages; 413 past `limit` (refused before reading
    when the declared Content-Length already says so), 400 if the client goes away."""
    if declared is not None and _declared_over(declared, limit):
        raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequestError("the client disconnected before sending the body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_over(declared: str, limit: int) -> bool:
    text = declared.strip()
    if not (text.isascii() and text.isdigit()):
        return False  # not a length: the server's parser has already refused the request
    return len(text) > _MAX_LENGTH_DIGITS or int(text) > limit


def parse_json_object(raw: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object: 400 when it is not JSON, not an object or nests too
    deep; 422 naming the field when a value cannot be stored (NUL, an unsafe number)."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise MalformedRequestError("the request needs a JSON object body")
    try:
        value = loads(raw)
    except JsonSyntaxError as exc:
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None
    except UncleanJsonError as exc:
        problem = exc.problem
        if problem.kind == "depth":
            raise MalformedRequestError(f"the body {problem.message} (at {problem.path})") from None
        raise ValidationFailedError([{"field": problem.path, "message": problem.message}]) from None
    if not isinstance(value, dict):
        raise MalformedRequestError("the body must be a JSON object")
    return value


def _field_name(location: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in location if part not in ("function-after", "function-before")]
    return ".".join(parts) or "body"


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data`; a model may add cross-field rules with a `problems()` method."""
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        fields = []
        for error in exc.errors(include_url=False):
            location = tuple(
                part
                for part in error["loc"]
                if not (isinstance(part, str) and ("[" in part or part.startswith("function")))
            )
            entry: dict[str, Any] = {
                "field": _field_name(location),
                "message": str(error["msg"]).removeprefix("Value error, "),
            }
            if error["type"] != "missing" and "input" in error:
                echoed = _jsonable(error["input"])
                if echoed is not None:
                    entry["value"] = echoed
            fields.append(entry)
        # Rules across fields that hold even for a body pydantic refused (all at once).
        raw_problems = getattr(model, "raw_problems", None)
        if callable(raw_problems):
            named = {entry["field"] for entry in fields}
            fields += [
                {"field": field, "message": message}
                for field, message in raw_problems(data)
                if field not in named
            ]
        raise ValidationFailedError(fields) from None
    problems = getattr(result, "problems", None)
    found: list[tuple[str, str]] = problems() if callable(problems) else []
    if found:
        raise ValidationFailedError(
            [
                {"field": field, "message": message, "value": _jsonable(data.get(field))}
                for field, message in found
            ]
        )
    return result


def _jsonable(value: Any) -> Any:
    """A value to echo in an error, only when it serialises (else no value is echoed:
    a message never fails on what it quotes)."""
    try:
        orjson.dumps(value)  # what the error response is rendered with (64-bit integers)
    except (TypeError, ValueError):  # not even repr(): a 5,000-digit int's repr raises
        return None
    return value
