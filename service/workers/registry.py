"""Which workers a process runs: `serve` runs them beside the HTTP app, `worker` alone.

Each worker module exposes a factory taking the open `Resources`; add new ones here.
"""

from __future__ import annotations

from service.resources import Resources
from service.workers.applier import build_applier_loop
from service.workers.loop import WorkerLoop
from service.workers.notifier import build_notifier_loop
from service.workers.policy import build_policy_loop
from service.workers.provisioner import build_provisioner_loop
from service.workers.readiness import build_readiness_loop
from service.workers.reconciler import build_reconciler_loop, build_transitions_loop
from service.workers.relister import build_relister_loop
from service.workers.retention import build_retention_loop


def build_worker_loops(resources: Resources) -> list[WorkerLoop]:
    loops: list[WorkerLoop] = []
    # (worker factories are appended below, one line each)
    loops.append(build_notifier_loop(resources))
    loops.append(build_provisioner_loop(resources))
    loops.append(build_reconciler_loop(resources))
    loops.append(build_transitions_loop(resources))
    loops.append(build_applier_loop(resources))
    loops.append(build_relister_loop(resources))
    loops.append(build_readiness_loop(resources))
    loops.append(build_policy_loop(resources))
    loops.append(build_retention_loop(resources))
    return loops
