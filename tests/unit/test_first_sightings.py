"""What a worker logs once: a repeat is told from a first sighting, in bounded memory."""

from __future__ import annotations

import pytest

from service.workers.first_sightings import FirstSightings


def test_a_key_is_a_first_sighting_once() -> None:
    sightings = FirstSightings(capacity=10)
    assert sightings.first("a")
    assert not sightings.first("a")
    assert sightings.first("b")
    assert not sightings.first("a") and not sightings.first("b")


def test_memory_never_holds_more_than_the_capacity() -> None:
    sightings = FirstSightings(capacity=3)
    for number in range(1000):
        sightings.first(f"instance-{number}")
        assert len(sightings) <= 3
    assert len(sightings) == 3


def test_the_least_recently_seen_is_forgotten_first_and_then_counts_as_new() -> None:
    sightings = FirstSightings(capacity=2)
    sightings.first("old")
    sightings.first("kept")
    assert not sightings.first("old")  # seen again: now the most recent
    sightings.first("new")  # over capacity: "kept" (least recently seen) goes
    assert not sightings.first("old")
    assert sightings.first("kept"), "forgotten, so reported again"


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FirstSightings(capacity=0)
