"""The translation table from Novita answers and transport failures to NovitaErrors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
import pytest

from service.errors import UpstreamError
from service.novita.errors import (
    HttpFailure,
    NovitaAuthenticationError,
    NovitaBadRequestError,
    NovitaCapacityError,
    NovitaCudaIncompatibleError,
    NovitaError,
    NovitaForbiddenError,
    NovitaInvalidStateError,
    NovitaNetworkError,
    NovitaNotFoundError,
    NovitaProtocolError,
    NovitaRateLimitedError,
    NovitaServerError,
    NovitaTimeoutError,
    parse_retry_after,
    translate,
)

KEY = "sk_live_ABCdef0123456789"


def body(code: int, reason: str, message: str = "", **metadata: object) -> bytes:
    payload = {"code": code, "reason": reason, "message": message, "metadata": metadata}
    return json.dumps(payload).encode()


def answer(status: int, raw: bytes = b"", **headers: str) -> NovitaError:
    return translate(HttpFailure(status, headers, raw), endpoint="GET /gpu/instance")


@pytest.mark.parametrize(
    ("status", "raw", "expected", "code"),
    [
        (
            401,
            body(401, "UNAUTHORIZED", "bad key"),
            NovitaAuthenticationError,
            "NOVITA_AUTHENTICATION",
        ),
        (403, body(403, "FORBIDDEN"), NovitaForbiddenError, "NOVITA_FORBIDDEN"),
        (404, body(404, "RESOURCE_NOT_FOUND"), NovitaNotFoundError, "NOVITA_NOT_FOUND"),
        (
            400,
            body(400, "RESOURCE_NOT_FOUND", "container not found"),
            NovitaNotFoundError,
            "NOVITA_NOT_FOUND",
        ),
        (400, body(400, "TEMPLATE_NOT_FOUND"), NovitaNotFoundError, "NOVITA_NOT_FOUND"),
        (400, body(400, "INSUFFICIENT_RESOURCE"), NovitaCapacityError, "NOVITA_CAPACITY"),
        (400, body(400, "MIGRATE_INSUFFICIENT_RESOURCE"), NovitaCapacityError, "NOVITA_CAPACITY"),
        (
            400,
            body(400, "CONFLICT", "invalid state change"),
            NovitaInvalidStateError,
            "NOVITA_INVALID_STATE",
        ),
        (
            400,
            body(400, "BAD_REQUEST", "Invalid State Change"),
            NovitaInvalidStateError,
            "NOVITA_INVALID_STATE",
        ),
        (409, body(409, "SOMETHING"), NovitaInvalidStateError, "NOVITA_INVALID_STATE"),
        (
            400,
            body(400, "VALIDATOR_PARAM", "rootfsSize too big"),
            NovitaBadRequestError,
            "NOVITA_BAD_REQUEST",
        ),
        (400, body(400, "IMAGE_NOT_FOUND"), NovitaBadRequestError, "NOVITA_BAD_REQUEST"),
        (400, body(400, "BALANCE_NOT_ENOUGH"), NovitaBadRequestError, "NOVITA_BAD_REQUEST"),
        (422, b"not json", NovitaBadRequestError, "NOVITA_BAD_REQUEST"),
        (429, body(429, "RATE_LIMIT_EXCEEDED"), NovitaRateLimitedError, "NOVITA_RATE_LIMITED"),
        (500, body(500, "UNKNOWN"), NovitaServerError, "NOVITA_SERVER_ERROR"),
        (502, b"<html>Bad Gateway</html>", NovitaServerError, "NOVITA_SERVER_ERROR"),
        (503, b"", NovitaServerError, "NOVITA_SERVER_ERROR"),
        (404, b"404: Not Found", NovitaProtocolError, "NOVITA_PROTOCOL"),
        (302, b"", NovitaProtocolError, "NOVITA_PROTOCOL"),
    ],
)
def test_translation_table(status: int, raw: bytes, expected: type[NovitaError], code: str) -> None:
    error = answer(status, raw)
    assert type(error) is expected
    assert error.code == code
    assert error.status == status
    assert isinstance(error, UpstreamError)


def test_body_fields_are_kept() -> None:
    error = answer(400, body(400, "INSUFFICIENT_RESOURCE", "no gpus", clusterId="as-sgp-2"))
    assert error.reason == "INSUFFICIENT_RESOURCE"
    assert error.metadata == {"clusterId": "as-sgp-2"}
    assert "no gpus" in error.message
    assert "GET /gpu/instance" in error.message
    assert error.details["reason"] == "INSUFFICIENT_RESOURCE"


def test_non_json_body_becomes_a_truncated_message() -> None:
    error = answer(500, b"x" * 5000)
    assert len(error.message) < 700
    assert error.reason is None


def test_retryable_and_breaker_classification() -> None:
    assert answer(500).retryable and answer(500).availability_failure
    assert answer(429).retryable and not answer(429).availability_failure
    for status, raw in [
        (400, body(400, "INSUFFICIENT_RESOURCE")),
        (401, b""),
        (404, body(404, "RESOURCE_NOT_FOUND")),
    ]:
        error = answer(status, raw)
        assert not error.retryable and not error.availability_failure


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("1.5", 1.5), ("-3", 0.0)])
def test_retry_after_seconds(header: str, seconds: float) -> None:
    error = answer(429, body(429, "RATE_LIMIT_EXCEEDED"), **{"Retry-After": header})
    assert isinstance(error, NovitaRateLimitedError)
    assert error.retry_after == seconds


def test_retry_after_http_date_and_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert answer(429).retry_after is None


def test_retry_after_also_read_on_503() -> None:
    assert answer(503, b"", **{"retry-after": "4"}).retry_after == 4.0


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (TimeoutError(), NovitaTimeoutError, "NOVITA_TIMEOUT"),
        (aiohttp.ServerTimeoutError("read timeout"), NovitaTimeoutError, "NOVITA_TIMEOUT"),
        (aiohttp.ServerDisconnectedError(), NovitaNetworkError, "NOVITA_NETWORK"),
        (aiohttp.ClientPayloadError("broken"), NovitaNetworkError, "NOVITA_NETWORK"),
        (ConnectionRefusedError(111, "refused"), NovitaNetworkError, "NOVITA_NETWORK"),
        (OSError("no route"), NovitaNetworkError, "NOVITA_NETWORK"),
    ],
)
def test_transport_exceptions(exc: BaseException, expected: type[NovitaError], code: str) -> None:
    error = translate(exc, endpoint="POST /gpu/instance/stop")
    assert type(error) is expected
    assert error.code == code
    assert error.status is None
    assert error.retryable and error.availability_failure


def key_in_everything(error: NovitaError) -> str:
    return " ".join(
        [
            error.message,
            str(error),
            repr(error),
            str(error.details),
            str(error.metadata),
            str(error.reason),
        ]
    )


@pytest.mark.parametrize(
    "raw",
    [
        body(401, "UNAUTHORIZED", f"invalid key {KEY}"),
        body(400, f"BAD_{KEY}", "x"),
        body(400, "VALIDATOR_PARAM", "x", header=f"Bearer {KEY}", nested={"k": [KEY]}),
        f"Authorization: Bearer {KEY}".encode(),
        f"<html>{KEY}</html>".encode(),
        json.dumps({"message": f"token={KEY}&x=1"}).encode(),
    ],
)
@pytest.mark.parametrize("status", [400, 401, 500])
def test_the_api_key_never_appears_in_an_error(raw: bytes, status: int) -> None:
    error = translate(HttpFailure(status, {}, raw), endpoint="GET /x", secrets=(KEY,))
    assert KEY not in key_in_everything(error)
    assert "[REDACTED]" in key_in_everything(error)


def test_the_api_key_never_appears_in_a_transport_error() -> None:
    exc = OSError(f"cannot connect to https://user:{KEY}@api.novita.ai")
    error = translate(exc, endpoint="GET /x", secrets=(KEY,))
    assert KEY not in key_in_everything(error)


def test_unknown_bearer_tokens_are_redacted_too() -> None:
    error = answer(400, body(400, "X", "echo: Authorization: Bearer someone-elses-token"))
    assert "someone-elses-token" not in error.message


# -- readings of the error body (docs/novita-facts.md) ----------------------------------


def message_only(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "metadata": {}}).encode()


@pytest.mark.parametrize(
    ("raw", "expected", "reason"),
    [
        (message_only(400, "INSUFFICIENT_RESOURCE: no gpus"), NovitaCapacityError,
         "INSUFFICIENT_RESOURCE"),
        (message_only(400, "RESOURCE_NOT_FOUND: container not found"), NovitaNotFoundError,
         "RESOURCE_NOT_FOUND"),
        (message_only(400, "CUDA_VERSION_INCOMPATIBLE: needs 12.4"),
         NovitaCudaIncompatibleError, "CUDA_VERSION_INCOMPATIBLE"),
        (message_only(400, "CONFLICT: invalid state change"), NovitaInvalidStateError,
         "CONFLICT"),
        (json.dumps({"code": 400, "msg": "INSUFFICIENT_RESOURCE"}).encode(),
         NovitaCapacityError, "INSUFFICIENT_RESOURCE"),
        # An unknown upper-case word is not taken for a token.
        (message_only(400, "GPU NOT READY"), NovitaBadRequestError, None),
    ],
)
def test_error_token_is_read_from_message_when_reason_is_absent(
    raw: bytes, expected: type[NovitaError], reason: str | None
) -> None:
    error = answer(400, raw)
    assert type(error) is expected
    assert error.reason == reason


def test_cuda_incompatibility_is_a_bad_request_of_its_own() -> None:
    error = answer(400, body(400, "CUDA_VERSION_INCOMPATIBLE", "product supports 12.2"))
    assert isinstance(error, NovitaCudaIncompatibleError)
    assert isinstance(error, NovitaBadRequestError)
    assert error.code == "NOVITA_CUDA_INCOMPATIBLE"


def test_plain_text_404_is_not_found_only_once_the_route_is_confirmed() -> None:
    failure = HttpFailure(404, {}, b"404 page not found\n")
    unconfirmed = translate(failure, endpoint="GET /gpu/instance")
    confirmed = translate(failure, endpoint="GET /gpu/instance", route_confirmed=True)
    assert type(unconfirmed) is NovitaProtocolError  # a wrong base URL deletes nothing
    assert type(confirmed) is NovitaNotFoundError
    assert confirmed.status == 404
