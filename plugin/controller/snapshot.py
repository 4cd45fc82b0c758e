"""The controller's view after a tick, as plain data: what ``tritonmix status`` shows and the metrics export."""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .model import EndpointView, ModelPlan

__all__ = ["EndpointRow", "EndpointRows", "ControllerSnapshot", "desired_replicas", "desired_replicas_by_model", "build_snapshot"]


class EndpointRow(NamedTuple):
    """One endpoint's line in a snapshot (a NamedTuple: one per endpoint per tick; a frozen dataclass costs 5x)."""

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


class EndpointRows(collections.abc.Sequence):
    """A snapshot's rows, an immutable sequence built on its first read from the tick's values (copied when the
    tick publishes). Every tick publishes a snapshot, a status page or a metrics scrape reads one now and then:
    at 1,000 endpoints building the rows was ~1.5 ms of every tick. Two threads reading at once may both build
    them; they build the same rows."""

    __slots__ = ("_n", "_build", "_rows")

    def __init__(self, n: int, build: Callable[[], Tuple[EndpointRow, ...]]) -> None:
        self._n, self._build = n, build
        self._rows: Optional[Tuple[EndpointRow, ...]] = None

    def _built(self) -> Tuple[EndpointRow, ...]:
        rows = self._rows
        if rows is None:
            rows = self._rows = self._build()
        return rows

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> Any:
        return self._built()[index]

    def __iter__(self) -> Iterator[EndpointRow]:
        return iter(self._built())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EndpointRows):
            other = other._built()
        return self._built() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._built())


@dataclasses.dataclass(frozen=True)
class ControllerSnapshot:
    at_s: float
    mode: str
    configured_mode: str
    panic: bool
    endpoints: Sequence[EndpointRow]                 # EndpointRows: built on the first read
    demand_rps: Dict[Tuple[str, str], float]
    desired_replicas: Dict[str, int]
    pool_demand_rps: Dict[str, float]
    decisions_total: int
    #: mu per (endpoint, model): the estimators the plans use (the rows show the busiest model's)
    capacity_rps: Dict[Tuple[str, str], float] = dataclasses.field(default_factory=dict)


def desired_replicas(views: Sequence[EndpointView], assigned_rps: Sequence[float],
                     utilisation: float) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Per pool: replicas = ceil(lambda_pool / (utilisation x mu_replica)), with lambda_pool the load this client
    assigns to the pool and mu_replica the mean mu over the pool's healthy endpoints (all of them if none is).
    Every client exports its own figure: an autoscaler sums ``tritonmix_pool_demand_rps`` over clients and
    divides, or takes the max of the replica figures when one client dominates."""
    return desired_replicas_by_model([(views, assigned_rps)], utilisation)


def desired_replicas_by_model(per_model: Sequence[Tuple[Sequence[EndpointView], Sequence[float]]],
                              utilisation: float) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Several models on one pool: replicas = ceil(sum_m lambda_(m,pool) / (utilisation x mu_(m,replica))), each
    model's load in replicas of its own capacity, summed before rounding up; lambda_pool in requests/s."""
    fractional: Dict[str, float] = {}
    demand: Dict[str, float] = {}
    for views, assigned in per_model:
        lam: Dict[str, float] = {}
        mus: Dict[str, List[float]] = {}  # every endpoint's mu per pool ...
        up: Dict[str, List[float]] = {}  # ... and the healthy ones', in one pass without a tuple per endpoint
        for v, a in zip(views, assigned):
            pool = v.pool
            if pool in lam:
                lam[pool] += a
            else:
                lam[pool], mus[pool], up[pool] = 0.0 + a, [], []
            mus[pool].append(v.mu_rps)
            if v.healthy:
                up[pool].append(v.mu_rps)
        for pool, rps in lam.items():
            demand[pool] = demand.get(pool, 0.0) + rps
            healthy = up[pool] or mus[pool]
            mu_replica = sum(healthy) / len(healthy)
            extra = rps / (utilisation * mu_replica) if mu_replica > 0 and rps > 0 else 0.0
            fractional[pool] = fractional.get(pool, 0.0) + extra
    return {pool: math.ceil(f - 1e-9) if f > 0 else 0 for pool, f in fractional.items()}, demand


def build_snapshot(at_s: float, views: Sequence[EndpointView], plan: ModelPlan, extras: Dict[str, Sequence],
                   demand: Dict[Tuple[str, str], float], configured: str, utilisation: float,
                   decisions_total: int,
                   per_model: Optional[Sequence[Tuple[Optional[str], Sequence[EndpointView], Sequence[float]]]] = None
                   ) -> ControllerSnapshot:
    """``extras``: per-endpoint "ready", "ejected", "in_flight", "stale_s" sequences. ``views``: the rows' figures
    (one model's); ``per_model``: (model, views, assigned) of every model planned (default: ``views`` and the
    plan), for the attributed cost (price x sum_m assigned_m / mu_m: the busy share of the endpoint), the desired
    replicas and ``capacity_rps``."""
    per_model = per_model or [(None, views, plan.assigned_rps)]
    columns = tuple(list(extras[k]) for k in ("ready", "ejected", "in_flight", "stale_s"))  # the tick's values
    rows = EndpointRows(len(views), functools.partial(_rows, views, plan, columns, tuple(per_model)))
    replicas, pool_demand = desired_replicas_by_model([(vs, a) for _, vs, a in per_model], utilisation)
    capacity = {(v.name, m): v.mu_rps for m, vs, _ in per_model if m is not None for v in vs}
    return ControllerSnapshot(at_s, plan.mode, configured, plan.panic, rows, dict(demand), replicas,
                              pool_demand, decisions_total, capacity)


def _rows(views: Sequence[EndpointView], plan: ModelPlan, columns: Tuple[List[Any], ...],
          per_model: Sequence[Tuple[Optional[str], Sequence[EndpointView], Sequence[float]]]
          ) -> Tuple[EndpointRow, ...]:
    """The rows of ``build_snapshot``; the attributed cost is price x sum_m assigned_(m,i) / mu_(m,i)."""
    n = len(views)
    busy = [0.0] * n
    for _, vs, a in per_model:  # column-wise: busy_i += a_(m,i) / mu_(m,i), models in order
        for i in range(n):
            mu = vs[i].mu_rps
            if mu > 0:
                busy[i] += a[i] / mu
    ready, ejected, in_flight, stale_s = columns
    assigned, inter_w, batch_w = plan.assigned_rps, plan.interactive_weights, plan.batch_weights
    new = tuple.__new__
    return tuple([
        new(EndpointRow, (v.name, v.pool, bool(ready[i]), bool(ejected[i]), v.healthy, v.meets_slo, v.mu_rps,
                          v.latency_s, v.cost_per_inference, int(in_flight[i]), assigned[i], inter_w[i], batch_w[i],
                          v.price_per_hour * busy[i], float(stale_s[i])))
        for i, v in enumerate(views)])
