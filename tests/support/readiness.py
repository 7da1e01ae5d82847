"""A readiness worker under test."""

from __future__ import annotations

from service.clock import ManualClock
from service.db.engine import Database
from service.readiness import Prober
from service.workers.readiness import ReadinessConfig, ReadinessWorker

STARTUP_TIMEOUT = 120.0


def make_readiness(
    database: Database, clock: ManualClock, owner: str = "ready-1"
) -> ReadinessWorker:
    return ReadinessWorker(
        database=database,
        clock=clock,
        owner=owner,
        # The simulator's endpoints live on loopback.
        prober=Prober(timeout=2.0, concurrency=8, allow_private=True),
        config=ReadinessConfig(interval=5.0, startup_timeout=STARTUP_TIMEOUT),
    )
