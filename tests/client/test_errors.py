"""The one table from HTTP error answers to typed exceptions, and what they carry."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest

from novita_lifecycle_client import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LifecycleClient,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServiceAPIError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from novita_lifecycle_client.errors import error_from_response
from tests.support.fake_api import Answer, FakeApi, running_fake_api


def body(code: str, message: str = "m", details: object = None) -> bytes:
    error = {"code": code, "message": message, "details": details, "requestId": "req-1"}
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (422, ValidationError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, UnavailableError),
        (418, ServiceAPIError),
    ],
)
def test_each_status_maps_to_its_exception(status: int, kind: type[ServiceAPIError]) -> None:
    error = error_from_response(status, body("SOME_CODE", "went wrong"), {})
    assert type(error) is kind
    assert (error.status, error.code, error.message, error.request_id) == (
        status,
        "SOME_CODE",
        "went wrong",
        "req-1",
    )


def test_validation_error_lists_the_fields_and_is_a_bad_request() -> None:
    fields = [{"field": "name", "message": "required"}]
    error = error_from_response(422, body("VALIDATION_ERROR", details={"fields": fields}), {})
    assert isinstance(error, ValidationError) and isinstance(error, BadRequestError)
    assert error.fields == fields
    assert error.details == {"fields": fields}


def test_retry_after_is_read_from_the_header_whatever_its_case() -> None:
    error = error_from_response(503, body("NOVITA_UNAVAILABLE"), {"Retry-After": "7"})
    assert isinstance(error, UnavailableError) and error.retry_after == 7.0
    assert error_from_response(503, b"", {"retry-after": "soon"}).retry_after is None


def test_a_non_json_answer_still_gives_a_typed_error_with_its_text() -> None:
    error = error_from_response(502, b"<html>Bad Gateway</html>", {"X-Request-ID": "r-9"})
    assert isinstance(error, ServerError)
    assert error.code == "HTTP_502"
    assert "Bad Gateway" in error.message
    assert error.request_id == "r-9"
    assert "502 HTTP_502" in str(error) and "r-9" in str(error)


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    async with running_fake_api() as api:
        yield api


async def test_error_answers_raise_through_the_client(fake: FakeApi) -> None:
    fake.plan(
        "/api/instances/inst_x/stop",
        Answer(409, {"error": {"code": "ILLEGAL_TRANSITION", "message": "no", "requestId": "q"}}),
    )
    async with LifecycleClient(fake.base_url, "k") as client:
        with pytest.raises(ConflictError) as caught:
            await client.stop("inst_x")
    assert caught.value.code == "ILLEGAL_TRANSITION" and caught.value.request_id == "q"
    sent = fake.requests[0]
    assert sent.method == "POST" and sent.headers["Authorization"] == "Bearer k"


async def test_create_sends_camel_case_fields_and_the_idempotency_key(fake: FakeApi) -> None:
    fake.plan("/api/instances", Answer(202, {"id": "inst_1", "status": "pending"}))
    async with LifecycleClient(fake.base_url, "k") as client:
        created = await client.create(
            name="a", product_name="RTX 4090 24GB", templateId=212, idempotency_key="key-1"
        )
    assert created["id"] == "inst_1"
    assert fake.requests[0].headers["Idempotency-Key"] == "key-1"
    assert fake.bodies[0] == b'{"name":"a","productName":"RTX 4090 24GB","templateId":212}'


async def test_an_unreachable_service_is_a_transport_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with LifecycleClient(f"http://127.0.0.1:{port}", "k") as client:
        with pytest.raises(TransportError):
            await client.get("inst_x")


def test_repr_never_shows_the_api_key() -> None:
    assert "secret-key" not in repr(LifecycleClient("http://h", "secret-key"))
