"""A faithful local fake of the Novita GPU instance API v1 (see docs/novita-facts.md).

    from service.simulator import Simulator, SimulatorConfig, Faults
    sim = Simulator(SimulatorConfig(api_keys=("sim-key",), seed=1), clock=ManualClock())
    await sim.start(host="127.0.0.1", port=0)
    sim.base_url    # http://127.0.0.1:<port>/gpu-instance/openapi/v1
    ...; clock.advance(5); await sim.tick(); ...
    await sim.stop()

The v1 API lives under `/gpu-instance/openapi/v1` (clusters, products, cpu/products,
template(s), repository auths, gpu/instance create/get/list/start/stop/restart/delete/
migrate). Instances move through the statuses of §6 on the injected clock; `tick()` applies
what is due, and every API read does so first. Port mappings answer on loopback once the
instance runs and its app is up (`endpoints.py`); status changes can be pushed as
Standard Webhooks-signed events (`push.py`).

Admin routes, under `/_sim`, need the same bearer token and are never faulted:

    GET  /_sim/state                      summary: counts by status, requests, faults, push stats
    GET  /_sim/faults                     the current `Faults` as JSON
    PUT  /_sim/faults                     partial update, e.g. {"error_rate": 0.2, "latency": 0.1}
    GET  /_sim/capacity                   free slots of every product x cluster pool
    PUT  /_sim/capacity                   {"clusterId", "count", "productId"?, "spot"?}
    GET  /_sim/instances/{id}             the instance as GET shows it, plus internal state
    POST /_sim/instances/{id}/reclaim     start a spot reclaim (spot instances that run)
    POST /_sim/instances/{id}/status      {"status", "hold"?, "statusError"?: {state, message},
                                          "spotStatus"?}: jump to any status now; it then
                                          follows its natural path unless "hold" is true
    POST /_sim/instances/{id}/app         {"startupDelay": seconds | null}; null = never up
    POST /_sim/tick                       apply due transitions now
    POST /_sim/clock/advance              {"seconds"}: only when running on a ManualClock
    POST /_sim/reset                      forget instances; restore capacity; clear faults

Errors everywhere use Novita's body `{code, reason, message, metadata}`.
"""

from service.simulator.config import DEFAULT_DWELL, SimulatorConfig
from service.simulator.faults import Faults
from service.simulator.machine import SimInstance
from service.simulator.simulator import Simulator

__all__ = ["DEFAULT_DWELL", "Faults", "SimInstance", "Simulator", "SimulatorConfig"]
