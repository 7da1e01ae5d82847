"""Templates: merging a Novita template with the client's request, and a TTL cache of them.

Merge rules (docs/architecture.md): the request's image wins if given; ports are the union, the
request's type winning on a port both list; envs are the template's overridden key by key
by the request's. The registry-auth id travels with the image it belongs to: the request's
if it names one, else the template's when the template's image is used. Only the id is
passed on: credentials are never fetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.clock import Clock
from service.novita import NovitaClient, Template
from service.provisioning.memo import Memo


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What the create request carries besides product, region and size."""

    image_url: str | None
    image_auth_id: str | None
    ports: tuple[dict[str, Any], ...]
    envs: tuple[dict[str, str], ...]
    rootfs_size: int | None
    command: str | None = None
    entrypoint: str | None = None
    min_cuda_version: str | None = None


def merge_ports(
    template_ports: Iterable[Mapping[str, Any]], request_ports: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """Union by port number, template order first; the request's type wins on a clash."""
    merged: dict[int, str] = {}
    for port in template_ports:
        merged[int(port["port"])] = str(port.get("type") or "http")
    for port in request_ports:
        merged[int(port["port"])] = str(port.get("type") or "http")
    return tuple({"port": number, "type": kind} for number, kind in merged.items())


def merge_envs(
    template_envs: Iterable[Mapping[str, str]], request_envs: Iterable[Mapping[str, str]]
) -> tuple[dict[str, str], ...]:
    """The template's variables, each replaced by the request's of the same key, then the rest."""
    merged: dict[str, str] = {}
    for env in template_envs:
        merged[env["key"]] = env.get("value", "")
    for env in request_envs:
        merged[env["key"]] = env.get("value", "")
    return tuple({"key": key, "value": value} for key, value in merged.items())


def merge_template(
    template: Template | None,
    *,
    image_url: str | None,
    image_auth_id: str | None,
    ports: Iterable[Mapping[str, Any]],
    envs: Iterable[Mapping[str, str]],
    rootfs_size: int | None,
) -> LaunchSpec:
    if template is None:
        return LaunchSpec(
            image_url=image_url,
            image_auth_id=image_auth_id,
            ports=merge_ports((), ports),
            envs=merge_envs((), envs),
            rootfs_size=rootfs_size,
        )
    uses_template_image = not image_url
    return LaunchSpec(
        image_url=image_url or template.image or None,
        image_auth_id=image_auth_id or (template.image_auth if uses_template_image else None),
        ports=merge_ports(({"port": p.port, "type": p.type} for p in template.ports), ports),
        envs=merge_envs(({"key": e.key, "value": e.value} for e in template.envs), envs),
        rootfs_size=rootfs_size if rootfs_size is not None else template.rootfs_size,
        command=template.start_command,
        entrypoint=template.entrypoint,
        min_cuda_version=template.min_cuda_version,
    )


class TemplateCache:
    """Templates by id, reused for `ttl` seconds, each read once however many ask at once;
    a missing template is not remembered."""

    def __init__(self, novita: NovitaClient, clock: Clock, ttl: float) -> None:
        self._novita = novita
        self._entries: Memo[Template] = Memo(clock, ttl)

    async def get(self, template_id: str) -> Template:
        """The template; raises `NovitaNotFoundError` if Novita has none with that id."""
        return await self._entries.get(template_id, lambda: self._novita.get_template(template_id))
