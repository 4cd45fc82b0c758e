"""The controller's view after a tick, as plain data: what ``tritonmix status`` shows and the metrics export."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Sequence, Tuple

from .model import EndpointView, Plan

__all__ = ["EndpointRow", "ControllerSnapshot", "desired_replicas", "build_snapshot"]


@dataclasses.dataclass(frozen=True)
class EndpointRow:
    name: str
    pool: str
    ready: bool
    ejected: bool
    healthy: bool
    meets_slo: bool
    mu_rps: float
    latency_s: float
    cost_per_inference: float
    in_flight: int
    assigned_rps: float
    interactive_weight: float
    batch_weight: float
    attributed_cost_per_hour: float       # price_per_hour x assigned / mu: this client's share of the endpoint's bill
    stale_s: float


@dataclasses.dataclass(frozen=True)
class ControllerSnapshot:
    at_s: float
    mode: str
    configured_mode: str
    panic: bool
    endpoints: Tuple[EndpointRow, ...]
    demand_rps: Dict[Tuple[str, str], float]
    desired_replicas: Dict[str, int]
    pool_demand_rps: Dict[str, float]
    decisions_total: int


def desired_replicas(views: Sequence[EndpointView], assigned_rps: Sequence[float],
                     utilisation: float) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Per pool: replicas = ceil(lambda_pool / (utilisation x mu_replica)), with lambda_pool the load this client
    assigns to the pool and mu_replica the mean mu over the pool's healthy endpoints (all of them if none is).
    Every client exports its own figure: an autoscaler sums ``tritonmix_pool_demand_rps`` over clients and
    divides, or takes the max of the replica figures when one client dominates."""
    demand: Dict[str, float] = {}
    mus: Dict[str, list] = {}
    for v, a in zip(views, assigned_rps):
        demand[v.pool] = demand.get(v.pool, 0.0) + a
        mus.setdefault(v.pool, []).append((v.healthy, v.mu_rps))
    replicas = {}
    for pool, lam in demand.items():
        healthy = [mu for ok, mu in mus[pool] if ok] or [mu for _, mu in mus[pool]]
        mu_replica = sum(healthy) / len(healthy)
        replicas[pool] = math.ceil(lam / (utilisation * mu_replica) - 1e-9) if mu_replica > 0 and lam > 0 else 0
    return replicas, demand


def build_snapshot(at_s: float, views: Sequence[EndpointView], plan: Plan, extras: Dict[str, Sequence],
                   demand: Dict[Tuple[str, str], float], configured: str, utilisation: float,
                   decisions_total: int) -> ControllerSnapshot:
    """``extras``: per-endpoint "ready", "ejected", "in_flight", "stale_s" sequences."""
    assigned = plan.assigned_rps
    rows = tuple(
        EndpointRow(v.name, v.pool, bool(extras["ready"][i]), bool(extras["ejected"][i]), v.healthy, v.meets_slo,
                    v.mu_rps, v.latency_s, v.cost_per_inference, int(extras["in_flight"][i]), assigned[i],
                    plan.interactive_weights[i], plan.batch_weights[i],
                    v.price_per_hour * assigned[i] / v.mu_rps if v.mu_rps > 0 else 0.0, float(extras["stale_s"][i]))
        for i, v in enumerate(views))
    replicas, pool_demand = desired_replicas(views, assigned, utilisation)
    return ControllerSnapshot(at_s, plan.mode, configured, plan.panic, rows, dict(demand), replicas, pool_demand,
                              decisions_total)
