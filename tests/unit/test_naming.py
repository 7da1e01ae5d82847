"""Provider-side names carry our instance id and give it back exactly."""

from __future__ import annotations

import re

import pytest

from service.domain import new_instance_id
from service.provisioning.naming import (
    MAX_NAME_LENGTH,
    id_marker,
    instance_id_from_provider_name,
    provider_name,
)

NOVITA_NAME = re.compile(r"^[A-Za-z0-9-]+$")
ID = "inst_0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "client_name",
    ["trainer", "My Trainer #1 (vision)", "", "___", "ünïcødé-名前", "inst-" + "f" * 32, "x" * 400],
)
def test_round_trip_is_exact_and_name_is_novita_safe(client_name: str) -> None:
    instance_id = new_instance_id()
    name = provider_name(instance_id, client_name)
    assert NOVITA_NAME.match(name), name
    assert len(name) <= MAX_NAME_LENGTH
    assert instance_id_from_provider_name(name) == instance_id


def test_name_keeps_a_readable_slug_of_the_client_name() -> None:
    assert provider_name(ID, "My Trainer #1") == f"My-Trainer-1-inst-{ID[5:]}"
    assert provider_name(ID, "") == f"inst-{ID[5:]}"


def test_marker_is_a_substring_of_the_name_for_novita_name_search() -> None:
    assert id_marker(ID) in provider_name(ID, "trainer")


@pytest.mark.parametrize(
    "name",
    ["trainer", "inst-1234", "trainer-inst-" + "g" * 32, "inst_" + "a" * 32, "xinst-" + "a" * 32],
)
def test_names_without_our_id_are_not_ours(name: str) -> None:
    assert instance_id_from_provider_name(name) is None


def test_uppercased_by_the_provider_still_maps_back() -> None:
    assert instance_id_from_provider_name(provider_name(ID, "a").upper()) == ID


def test_rejects_ids_that_are_not_ours() -> None:
    with pytest.raises(ValueError):
        provider_name("i-123", "trainer")
