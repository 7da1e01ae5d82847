"""Reading request bodies: size limit, JSON parsing and pydantic validation → clear 4xx."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive

from service.errors import MalformedRequestError, PayloadTooLargeError, ValidationFailedError

M = TypeVar("M", bound=BaseModel)
DEFAULT_BODY_LIMIT = 1024 * 1024


async def read_body(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    return await read_asgi_body(
        request.receive, limit=limit, declared=request.headers.get("content-length")
    )


async def read_asgi_body(
    receive: Receive, *, limit: int = DEFAULT_BODY_LIMIT, declared: str | None = None
) -> bytes:
    """The request body from the ASGI messages; 413 past `limit` (refused before reading
    when the declared Content-Length already says so), 400 if the client goes away."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
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


def parse_json_object(raw: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    if not raw.strip():
        if empty_ok:
            return {}
        raise MalformedRequestError("the request needs a JSON object body")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None
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
                entry["value"] = _jsonable(error["input"])
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
                {"field": field, "message": message, "value": data.get(field)}
                for field, message in found
            ]
        )
    return result


def _jsonable(value: Any) -> Any:
    try:
        orjson.dumps(value)  # what the error response is rendered with (64-bit integers)
    except (TypeError, ValueError):
        return repr(value)
    return value
