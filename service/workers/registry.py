"""Which workers a process runs: `serve` runs them beside the HTTP app, `worker` alone.

Each worker module exposes a factory taking the open `Resources`; add new ones here.
"""

from __future__ import annotations

from service.resources import Resources
from service.workers.loop import WorkerLoop


def build_worker_loops(resources: Resources) -> list[WorkerLoop]:
    loops: list[WorkerLoop] = []
    # (worker factories are appended below, one line each)
    return loops
