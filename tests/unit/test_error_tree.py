"""The error tree drawn in `service.errors` is the code: every exception class the service
defines is drawn there (in the tree, with its status and code, or listed as outside it),
and each drawn status and code is the class's own."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import service
from service import errors
from service.errors import ServiceError
from service.novita import errors as novita_errors

ROW = re.compile(r"(\w+Error)\s+(\d{3}) ([A-Z_*]+)")


def _defined_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.name
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def _drawn() -> dict[str, tuple[int, str]]:
    assert errors.__doc__
    return {name: (int(status), code) for name, status, code in ROW.findall(errors.__doc__)}


def test_every_exception_class_is_in_the_drawing() -> None:
    assert errors.__doc__ and novita_errors.__doc__
    drawn = _drawn()
    missing = []
    for cls in _defined_exceptions():
        if issubclass(cls, novita_errors.NovitaError):
            ok = cls.__name__ in novita_errors.__doc__
        elif issubclass(cls, ServiceError):
            ok = cls.__name__ in drawn
        else:  # outside the tree: listed by name
            ok = f"{cls.__name__}`" in errors.__doc__
        if not ok:
            missing.append(f"{cls.__module__}.{cls.__name__}")
    assert missing == []


@pytest.mark.parametrize("name", sorted(_drawn()))
def test_drawn_status_and_code_are_the_class_attributes(name: str) -> None:
    status, code = _drawn()[name]
    cls = getattr(errors, name, None) or getattr(novita_errors, name)
    assert cls.http_status == status
    if code.endswith("*"):
        assert cls.code.startswith(code.rstrip("*"))
    else:
        assert cls.code == code


def test_an_answer_is_read_from_the_class() -> None:
    busy = errors.InstanceBusyError()
    assert (busy.http_status, busy.code, busy.http_headers()) == (
        409,
        "INSTANCE_BUSY",
        {"Retry-After": "5"},
    )
    limited = novita_errors.NovitaRateLimitedError(status=429, retry_after=12.4)
    assert limited.http_status == 503 and limited.http_headers() == {"Retry-After": "12"}
    assert limited.public_details() == {"providerStatus": 429, "providerReason": None}
    refused = errors.ValidationFailedError([{"field": "name", "message": "required"}])
    assert refused.public_details() == {"fields": [{"field": "name", "message": "required"}]}
    assert errors.AuthenticationError().http_headers()["WWW-Authenticate"].startswith("Bearer")
