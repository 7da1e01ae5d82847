"""Novita status → service status (docs/lifecycle.md), including the precedence rules."""

from __future__ import annotations

import pytest

from service.domain import Status
from service.provisioning.status_map import (
    LOST,
    PROVIDER_ERROR,
    Decision,
    Observation,
    contradicts_action,
    map_provider_status,
    stored_provider_status,
    transition_path,
)

S = Status


@pytest.mark.parametrize(
    ("current", "novita", "expected"),
    [
        (S.PROVISIONING, "pending", S.PROVISIONING),
        (S.PROVISIONING, "toCreate", S.PROVISIONING),
        (S.PROVISIONING, "creating", S.PROVISIONING),
        (S.PROVISIONING, "pulling", S.PROVISIONING),
        (S.STARTING, "pulling", S.STARTING),
        (S.STOPPED, "creating", S.STARTING),
        (S.PROVISIONING, "running", S.RUNNING),
        (S.RUNNING, "running", S.RUNNING),
        (S.READY, "running", S.READY),
        (S.STOPPED, "toStart", S.STARTING),
        (S.RUNNING, "restarting", S.STARTING),
        (S.RUNNING, "resetting", S.STARTING),
        (S.STOPPED, "migrating", S.STARTING),
        (S.RUNNING, "toStop", S.STOPPING),
        (S.RUNNING, "freezing", S.STOPPING),
        (S.STOPPING, "exited", S.STOPPED),
        (S.RUNNING, "toRemove", S.DELETING),
        (S.DELETING, "removing", S.DELETING),
        (S.DELETING, "removed", S.DELETED),
        (S.RUNNING, "removed", S.DELETED),
    ],
)
def test_table(current: Status, novita: str, expected: Status) -> None:
    assert map_provider_status(current, Observation(novita)) == Decision(expected)


def test_not_found_after_our_delete_is_deleted_else_lost() -> None:
    assert map_provider_status(S.DELETING, Observation(None)) == Decision(S.DELETED)
    assert map_provider_status(S.RUNNING, Observation(None)) == Decision(S.FAILED, LOST)


@pytest.mark.parametrize("spot", ["reclaiming", "terminated"])
@pytest.mark.parametrize("novita", ["running", "exited"])
def test_reclaimed_spot_is_interrupted_whatever_the_status(spot: str, novita: str) -> None:
    observed = Observation(novita, spot_status=spot)
    assert map_provider_status(S.RUNNING, observed) == Decision(S.INTERRUPTED)


def test_spot_notice_only_warns() -> None:
    observed = Observation("running", spot_status="notified")
    assert map_provider_status(S.RUNNING, observed) == Decision(S.RUNNING)


def test_a_start_after_a_reclaim_is_a_start_not_another_interruption() -> None:
    observed = Observation("toStart", spot_status="terminated")
    assert map_provider_status(S.STARTING, observed) == Decision(S.STARTING)


def test_removal_outranks_a_reclaim() -> None:
    observed = Observation("removed", spot_status="terminated")
    assert map_provider_status(S.DELETING, observed) == Decision(S.DELETED)


def test_status_error_while_not_running_is_failed() -> None:
    observed = Observation("exited", has_status_error=True)
    assert map_provider_status(S.PROVISIONING, observed) == Decision(S.FAILED, PROVIDER_ERROR)
    running = Observation("running", has_status_error=True)
    assert map_provider_status(S.PROVISIONING, running) == Decision(S.RUNNING)


@pytest.mark.parametrize("novita", ["Running", "other", "", "somethingNew"])
def test_unrecognised_keeps_the_current_status(novita: str) -> None:
    assert map_provider_status(S.RUNNING, Observation(novita)) == Decision(None)


def test_transition_path_direct_detour_and_refusal() -> None:
    assert transition_path(S.PROVISIONING, S.RUNNING) == (S.RUNNING,)
    assert transition_path(S.RUNNING, S.RUNNING) == (S.RUNNING,)
    assert transition_path(S.RUNNING, S.DELETED) == (S.DELETING, S.DELETED)
    assert transition_path(S.DELETING, S.RUNNING) == ()
    assert transition_path(S.PROVISIONING, S.READY) == ()


def test_contradictions_of_requested_actions() -> None:
    assert contradicts_action(S.STOPPING, S.RUNNING)
    assert contradicts_action(S.STARTING, S.STOPPED)
    assert contradicts_action(S.DELETING, S.RUNNING)
    assert not contradicts_action(S.DELETING, S.DELETED)
    assert not contradicts_action(S.STOPPING, S.STOPPED)
    assert not contradicts_action(S.RUNNING, S.STOPPED)


def test_unknown_provider_statuses_are_stored_within_the_column_width() -> None:
    assert stored_provider_status("running") == "running"
    assert stored_provider_status("x" * 100) == "x" * 32
    assert stored_provider_status("") is None
