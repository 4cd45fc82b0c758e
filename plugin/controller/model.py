"""Plain data the policy works on: one ``EndpointView`` per endpoint per tick, the modes and request classes.

The policy (``tritonmix.controller.policy``) is pure functions and small state machines over these values; the control
loop (``tritonmix.controller.loop``) builds them from live signals. Nothing here does I/O or reads a clock.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Tuple

__all__ = ["COST", "CAPACITY", "AUTO", "MODES", "INTERACTIVE", "BATCH", "REQUEST_CLASSES", "EndpointView", "ModelPlan"]

COST = "cost"
CAPACITY = "capacity"
AUTO = "auto"
MODES = (COST, CAPACITY, AUTO)

INTERACTIVE = "interactive"
BATCH = "batch"
REQUEST_CLASSES = (INTERACTIVE, BATCH)


class EndpointView(NamedTuple):
    """What the policy knows of one endpoint this tick (rates in requests/s, times in seconds). Immutable; a
    NamedTuple because the loop builds one per (endpoint, model) every tick: a frozen dataclass costs 5x as much
    to build (``object.__setattr__`` per field), a tick at 1,000 endpoints ~2 ms of it."""

    index: int
    name: str
    pool: str                      # accelerator kind: the endpoints of one kind form a pool
    price_per_hour: float
    mu_rps: float                  # capacity within the SLO (estimators.CapacityEstimator)
    latency_s: float               # expected latency at light load (service time); NaN when unknown
    healthy: bool                  # ready and not ejected (or: panic mode, every endpoint counts)
    meets_slo: bool                # latency_s <= SLO: may take interactive requests
    external_rps: float = 0.0      # load other clients put on it (server throughput - ours), >= 0
    capacity_type: str = "on-demand"
    service_rps: float = math.nan  # C_0 / s_i: configured slots at the measured service time; NaN unknown
    slo_utilisation: float = 1.0   # queueing.slo_utilisation(C_i, s_i, SLO): hottest slot use that keeps the SLO

    @property
    def cost_per_inference(self) -> float:
        """c_i = price_per_hour_i / 3600 / r_i (USD per request), r_i = C_0 / s_i (configured slots, measured service
        time) when known, else mu_i; inf when it is 0. A request costs its busy time s_i of one of the C_0 priced
        slots: the SLO factor and a learnt capacity cut in mu_i limit how much load goes there, not what each request
        costs (pricing by mu_i made an endpoint whose mu was cut look dear, so COST starved it and mu_i never
        recovered)."""
        rate = self.service_rps if self.service_rps > 0.0 else self.mu_rps
        price = self.price_per_hour  # cost_per_inference(price, rate), inline: the policy reads it O(n) per tick
        if price <= 0.0:
            return 0.0
        return math.inf if rate <= 0.0 else price / 3600.0 / rate

    def room_rps(self, utilisation: float) -> float:
        """Capacity left for this client at ``utilisation``: max(0, utilisation x mu_i - external_i)."""
        return max(0.0, utilisation * self.mu_rps - self.external_rps)

    def safe_room_rps(self, utilisation: float) -> float:
        """Capacity left within the SLO: ``room_rps(min(utilisation, slo_utilisation))``. The planned load of an
        endpoint with few slots stays low enough that its queue wait rarely exceeds the SLO's slack
        (``queueing``): one slot at 80% load missed the SLO for ~15% of its requests."""
        return max(0.0, min(utilisation, self.slo_utilisation) * self.mu_rps - self.external_rps)  # room_rps, inline


def cost_per_inference(price_per_hour: float, mu_rps: float) -> float:
    """c_i = price_per_hour / 3600 / mu_i, in USD per request; inf for mu_i <= 0 (a free endpoint costs 0)."""
    if price_per_hour <= 0.0:
        return 0.0
    if mu_rps <= 0.0:
        return math.inf
    return price_per_hour / 3600.0 / mu_rps


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """The policy's output for one tick: per request class, the load (req/s) it assigns to each endpoint.

    Weights are the assigned load normalised; ``assigned_rps`` also feeds the attributed cost and desired replicas.
    """

    mode: str                                  # the mode in force: COST or CAPACITY (AUTO resolves to one of them)
    interactive_rps: Tuple[float, ...]
    batch_rps: Tuple[float, ...]
    interactive_weights: Tuple[float, ...]
    batch_weights: Tuple[float, ...]
    panic: bool = False

    def weights(self, request_class: str) -> Tuple[float, ...]:
        return self.batch_weights if request_class == BATCH else self.interactive_weights

    @property
    def assigned_rps(self) -> Tuple[float, ...]:
        return tuple(a + b for a, b in zip(self.interactive_rps, self.batch_rps))
