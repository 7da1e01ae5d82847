"""Creating instances through the API."""

from __future__ import annotations

from tests.plugins.service import ServiceUnderTest


def body(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "name": "trainer",
        "productName": "RTX 4090 24GB",
        "templateId": 212,
        "gpuNum": 2,
        "region": "AS-SGP-02",
        "ports": "8888/http,22/tcp",
        "envs": [{"key": "HF_TOKEN", "value": "hf_do_not_show"}],
        "labels": {"team": "vision"},
    }
    values.update(overrides)
    return values


async def create(service: ServiceUnderTest, **overrides: object) -> dict[str, object]:
    status, created, _ = await service.call("POST", "/api/instances", json=body(**overrides))
    assert status == 202, created
    return created  # type: ignore[no-any-return]
