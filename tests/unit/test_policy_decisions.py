"""The pure policy decisions: when an instance counts as idle, how a replacement's regions
are chosen, and when a spot recovery gives up."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from service.domain import Instance, Status
from service.policies import idle, interruption

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _instance(**changes: object) -> Instance:
    base = Instance(
        id="inst_1", name="n", status=Status.READY, novita_instance_id="n1",
        provider_status="running", status_reason=None, product_id="p", product_name="RTX",
        region="AS-SGP-02", gpu_num=1, rootfs_size=None, billing_mode="spot",
        price_per_hour=None, template_id="212", image_url=None, image_auth_id=None,
        preferred_region="AS-SGP-02", regions=(), ports=(), envs=(), webhook_url=None,
        labels={}, readiness=None, auto_stop=None, port_mappings=(), created_at=T0,
        updated_at=T0, submitted_at=T0, running_at=T0, ready_at=T0, stopped_at=None,
        deleted_at=None, last_used_at=None, provider_observed_at=None, next_check_at=None,
        claim_owner=None, claim_expires_at=None, event_seq=1, version=1,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_own_policy_wins_over_the_default_and_none_means_never() -> None:
    defaults = idle.IdleDefaults(idle_minutes=60, action="delete")
    own = _instance(auto_stop={"idleMinutes": 5, "action": "stop"})
    assert idle.effective_policy(own, defaults) == idle.IdlePolicy(5, "stop")
    assert idle.effective_policy(_instance(), defaults) == idle.IdlePolicy(60, "delete")
    assert idle.effective_policy(_instance(), idle.IdleDefaults()) is None


def test_idle_counts_from_the_newer_of_ready_and_heartbeat_after_the_grace() -> None:
    policy = idle.IdlePolicy(30)
    later = T0 + timedelta(minutes=20)
    assert idle.idle_deadline(_instance(last_used_at=later), policy, 10) == later + timedelta(
        minutes=30
    )
    # An older heartbeat (from an earlier run) does not count.
    stale = _instance(last_used_at=T0 - timedelta(hours=5))
    assert idle.idle_deadline(stale, policy, 10) == T0 + timedelta(minutes=30)
    # The grace period after the start outlasts a short idle time.
    assert idle.idle_deadline(_instance(), idle.IdlePolicy(1), 10) == T0 + timedelta(minutes=10)
    assert idle.idle_deadline(_instance(status=Status.RUNNING, ready_at=None), policy, 10) is None


def test_replacement_avoids_the_reclaimed_region() -> None:
    assert interruption.replacement_regions(_instance()) == ("CN-HK-01", "AS-IN-01")
    custom = _instance(preferred_region=None, regions=("as-sgp-02", "EU-DE-01"))
    assert interruption.replacement_regions(custom) == ("EU-DE-01",)
    spec = interruption.replacement_spec(_instance())
    assert spec.region is None and spec.product_id is None and spec.product_name == "RTX"


def test_a_replacement_belongs_to_the_team_of_the_original() -> None:
    assert interruption.replacement_spec(_instance(team="vision")).team == "vision"


def test_recovery_is_bounded_by_attempts_and_by_time() -> None:
    policy = interruption.effective_policy(
        _instance(interruption_policy={"action": "restart", "maxAttempts": 2}),
        interruption.InterruptionDefaults(max_minutes=10),
    )
    assert policy == interruption.InterruptionPolicy("restart", 2, 10.0)
    assert not interruption.is_exhausted(1, T0, policy, T0 + timedelta(minutes=9))
    assert interruption.is_exhausted(2, T0, policy, T0)
    assert interruption.is_exhausted(0, T0, policy, T0 + timedelta(minutes=10))
    assert interruption.next_attempt_at(3, T0, 30) == T0 + timedelta(seconds=120)
