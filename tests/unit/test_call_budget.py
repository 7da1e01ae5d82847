"""The call budget: what each kind of read may use of the Novita rate limit."""

from __future__ import annotations

import pytest

from service.workers.call_budget import MIN_TRANSITIONAL_SHARE, CallBudget, RateMeter

DEFAULTS = CallBudget(
    per_minute=100, stable_share=0.5, floor=1.0, slow_interval=30.0, relist_interval=300.0
)


def test_on_an_empty_fleet_one_transitional_instance_is_read_at_the_floor() -> None:
    background = DEFAULTS.background_demand(stable=0, listed=1)
    left = DEFAULTS.transitional_budget(urgent_per_minute=1, background=background)
    assert left == pytest.approx(100 - 1 - 0.25)  # one relist page every 240 s
    assert DEFAULTS.round_interval(1, left) == 1.0


def test_many_in_transition_are_each_read_less_often_within_the_budget() -> None:
    left = DEFAULTS.transitional_budget(0, DEFAULTS.background_demand(0, 200))
    interval = DEFAULTS.round_interval(200, left)
    assert 200 * 60 / interval == pytest.approx(left)  # exactly the budget, not more


def test_the_background_keeps_its_share_and_yields_the_rest() -> None:
    # 20,000 stable instances: the relist's 200 pages over 80 % of 5 min (50 a minute)
    # come first; the polls get what the background's 80 % of the window leaves (30).
    assert DEFAULTS.relist_demand(20_000) == pytest.approx(50)
    assert DEFAULTS.stable_budget(20_000) == pytest.approx(30)
    background = DEFAULTS.background_demand(stable=20_000, listed=20_000)
    assert background == pytest.approx(80)
    left = DEFAULTS.transitional_budget(urgent_per_minute=0, background=background)
    assert left == pytest.approx(50)  # the background keeps STABLE_POLL_SHARE, not 90
    assert DEFAULTS.round_interval(1, left) == pytest.approx(1.2)


def test_stable_polls_keep_their_share_on_a_small_fleet_and_a_tenth_on_a_huge_one() -> None:
    assert DEFAULTS.stable_budget(1_000) == pytest.approx(50)
    assert DEFAULTS.stable_budget(100_000) == pytest.approx(10)


def test_urgent_demand_comes_first_but_never_starves_transitional_reads() -> None:
    left = DEFAULTS.transitional_budget(urgent_per_minute=500, background=0)
    assert left == pytest.approx(100 * MIN_TRANSITIONAL_SHARE)


def test_pages_of_a_listing() -> None:
    assert [DEFAULTS.pages(n) for n in (0, 1, 100, 101, 20_000)] == [1, 1, 1, 2, 200]


def test_the_rate_meter_counts_the_last_window() -> None:
    meter = RateMeter(window=60)
    assert meter.per_minute(0, 0) == 0
    assert meter.per_minute(1, 50) == pytest.approx(50)  # a burst counts for a whole minute
    assert meter.per_minute(30, 50) == pytest.approx(50)
    assert meter.per_minute(60.5, 60) == pytest.approx(60)
    assert meter.per_minute(62, 60) == pytest.approx(10)  # the burst has left the window
    assert meter.per_minute(200, 60) == pytest.approx(0)
