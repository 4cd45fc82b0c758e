"""What the controller keeps per model: a capacity estimator per (endpoint, model), that model's deltas and plan.

Capacity is per (endpoint, model), not per endpoint: Triton gives every model its own instance group (its own
slots, ``instance_group.count``), its own queue and its own service time, and reports each in its own series
(the ``model`` label). An endpoint that serves Stable Diffusion beside a tiny classifier has two capacities that
differ by orders of magnitude; one mu for both would price and fill it by a meaningless average. So each model is
planned over its own mu_(i,m); what is endpoint-wide stays per endpoint: readiness, ejection (a refused connection
refuses every model), price, and AUTO's one mode (see ``binding``).

Per model m and endpoint i, per tick:
    ok, failed, in flight, latency   the dispatchers of m (every request class) at i
    over_slo                         the router counts misses per endpoint only: they are shared out to the models
                                     in proportion to their interactive completions at i in the tick (exact with
                                     one model per endpoint, the common case)
    server series                    ``TritonSample.for_model(m)``; a source without per-model series gives the
                                     endpoint's sums, and the other models' completions then count as external
                                     load on m (right where they share the slots)
"""
from __future__ import annotations

import math
from operator import add
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .estimators import CapacityEstimator, seed_capacity
from .model import INTERACTIVE, ModelPlan
from .deltas import Deltas, EndpointTick
from .policy.planner import normalise
from .signals import TritonSample

__all__ = ["ModelState", "ModelStats", "model_stats", "share_misses", "binding", "combine_plans", "demand_by_model"]


class ModelState:
    """Per model: ``capacity[i]`` (CapacityEstimator of (endpoint i, this model)), the deltas of its counters and
    series, its cumulative share of the endpoints' SLO misses, and its last plan."""

    def __init__(self, model: Optional[str], fleet: Any) -> None:
        self.model = model
        self.capacity = [_hinted(fleet, e) for e in fleet.endpoints]
        n = len(fleet.endpoints)
        self._deltas = Deltas(n)
        self._over = [0.0] * n
        self._last_interactive = [0] * n
        self.plan: Optional[ModelPlan] = None
        self.ticks: List[EndpointTick] = []

    def follow(self, fleet: Any, reset: Sequence[int], live: Sequence[bool],
               pools: Optional[Sequence[str]] = None) -> None:
        """The set changed (``tritonmix.request.slots``): slots up to the fleet's; each new or reset slot gets a
        fresh estimator seeded from a measured pool mate (``live``, same pool: the one with the median mu), else
        from its own hints (``seed_capacity``). ``pools``: every endpoint's pool name, when the caller has them."""
        n = len(fleet.endpoints)
        fresh = sorted(set(reset) | set(range(len(self.capacity), n)))
        self._deltas.grow_slots(n)
        self._over += [0.0] * (n - len(self._over))
        self._last_interactive += [0] * (n - len(self._last_interactive))
        self.capacity += [None] * (n - len(self.capacity))  # type: ignore[list-item]
        if not fresh:
            return
        taken, eps = set(fresh), fleet.endpoints
        if pools is None:
            pools = [e.pool_name for e in eps]
        mates: Dict[str, List[Tuple[float, int]]] = {}  # measured live mates per pool, in one pass
        for j, (c, up, pool) in enumerate(zip(self.capacity, live, pools)):
            if up and c is not None and c.measured and j not in taken:
                found = mates.get(pool)
                if found is None:
                    found = mates[pool] = []
                found.append((c.mu_rps, j))
        seeds = {pool: self.capacity[sorted(found)[len(found) // 2][1]] for pool, found in mates.items()}
        for i in fresh:
            self._deltas.reset_slot(i)
            self._over[i], self._last_interactive[i] = 0.0, 0
            mate = seeds.get(pools[i])
            self.capacity[i] = mate.like() if mate is not None else _hinted(fleet, eps[i])

    def interactive_delta(self, interactive_ok: Sequence[int]) -> List[int]:
        """Interactive completions of this model per endpoint since the last call."""
        out = [max(0, c - last) for c, last in zip(interactive_ok, self._last_interactive)]
        self._last_interactive = list(interactive_ok)
        return out

    def observe(self, now: float, dt_s: float, stats: "ModelStats", over_share: Sequence[float],
                samples: Sequence[Optional[TritonSample]]) -> List[EndpointTick]:
        """Fold one tick in: per-endpoint observation of this model, then every estimator. O(n)."""
        self._over = over = list(map(add, self._over, over_share)) + self._over[len(over_share):]
        counters = list(zip(stats.ok, [int(round(x)) for x in over], stats.failed))
        model = self.model
        mine = samples if model is None else [None if s is None else s.for_model(model) for s in samples]
        self.ticks = self._deltas.tick(now, dt_s, counters, mine, stats.in_flight, stats.latency_s)
        for est, t in zip(self.capacity, self.ticks):
            est.update(t.capacity)
        return self.ticks

    def mu(self) -> List[float]:
        return [c.mu_rps for c in self.capacity]


def _hinted(fleet: Any, e: Any) -> CapacityEstimator:
    """An estimator of endpoint ``e`` from its hints (max_rps, max_concurrency) or the default capacity."""
    s = fleet.controller
    return CapacityEstimator(seed_capacity(e.max_rps, e.max_concurrency, s.default_capacity_rps), e.max_concurrency,
                             slo_s=fleet.slo_s, slo_miss_threshold=s.slo_miss_threshold,
                             alpha_down=s.capacity_alpha_down, alpha_up=s.capacity_alpha_up, hinted=bool(e.max_rps))


class ModelStats:
    """One model's dispatcher figures per endpoint, summed over its request classes (cumulative ok / failed)."""

    __slots__ = ("ok", "failed", "interactive_ok", "in_flight", "latency_s")

    def __init__(self, n: int) -> None:
        self.ok = [0] * n
        self.failed = [0] * n
        self.interactive_ok = [0] * n
        self.in_flight = [0] * n
        self.latency_s = [math.nan] * n


def model_stats(stats: Mapping[Tuple[str, str], Any], n: int) -> Dict[str, ModelStats]:
    """Group dispatcher stats by model: sums of successes, failures, in flight; latency as the success-weighted
    mean of the classes' EWMA latencies. O(dispatchers x n), column-wise."""
    out: Dict[str, ModelStats] = {}
    weights: Dict[str, List[float]] = {}
    sums: Dict[str, List[float]] = {}
    for (model, request_class), st in stats.items():
        m = out.get(model)
        if m is None:
            m = out[model] = ModelStats(n)
            weights[model], sums[model] = [0.0] * n, [0.0] * n
        m.ok = list(map(add, m.ok, st.successes))
        m.failed = list(map(add, m.failed, st.failures))
        m.in_flight = list(map(add, m.in_flight, st.in_flight))
        if request_class == INTERACTIVE:
            m.interactive_ok = list(map(add, m.interactive_ok, st.successes))
        w = [ok if lat == lat else 0 for ok, lat in zip(st.successes, st.ewma_latency_s)]
        weights[model] = list(map(add, weights[model], w))
        sums[model] = [acc + (lat * k if k else 0.0) for acc, lat, k in zip(sums[model], st.ewma_latency_s, w)]
    for model, m in out.items():
        m.latency_s = [a / w if w else math.nan for a, w in zip(sums[model], weights[model])]
    return out


def share_misses(over_slo: Sequence[int], interactive: Mapping[str, Sequence[int]]) -> Dict[str, List[float]]:
    """Each endpoint's SLO misses this tick, shared out to the models by their interactive completions there."""
    n = len(over_slo)
    totals = [0] * n
    for d in interactive.values():  # column-wise, models in order
        totals = list(map(add, totals, d))
    return {m: [over * k / total if total else 0.0 for over, k, total in zip(over_slo, d, totals)]
            for m, d in interactive.items()}


def binding(demand: Mapping[str, float], room: Mapping[str, float]) -> Optional[str]:
    """The model nearest to its cheap set's limit: argmax lambda_m / K_m (K_m = 0 with demand: that one). AUTO's
    demand test on it decides for all: lambda_m > margin x K_m for some m iff it holds for the argmax, and every
    model is below the exit threshold iff the argmax is."""
    best, best_ratio = None, -1.0
    for m in sorted(demand):
        lam, k = demand[m], room.get(m, 0.0)
        ratio = lam / k if k > 0.0 else (math.inf if lam > 0.0 else 0.0)
        if ratio > best_ratio:
            best, best_ratio = m, ratio
    return best


def combine_plans(plans: Mapping[Optional[str], ModelPlan], demand: Mapping[Optional[str], float]) -> ModelPlan:
    """One plan for the endpoint-level outputs (default weights, snapshot, cost, replicas): the models' loads
    summed, weights the models' weights averaged by their share of the interactive demand (equal shares when there
    is none). One model: its plan unchanged."""
    if len(plans) == 1:
        return next(iter(plans.values()))
    items = list(plans.items())
    total = sum(demand.get(m, 0.0) for m, _ in items)
    share = [demand.get(m, 0.0) / total if total > 0 else 1.0 / len(items) for m, _ in items]
    first = items[0][1]

    def summed(attr: str) -> Tuple[float, ...]:
        return tuple(map(sum, zip(*(getattr(p, attr) for _, p in items))))

    def mixed(attr: str) -> Tuple[float, ...]:
        scaled = ([w * x for x in getattr(p, attr)] for w, (_, p) in zip(share, items))
        return normalise(list(map(sum, zip(*scaled))))

    return ModelPlan(mode=first.mode, interactive_rps=summed("interactive_rps"), batch_rps=summed("batch_rps"),
                interactive_weights=mixed("interactive_weights"), batch_weights=mixed("batch_weights"),
                panic=first.panic)


def demand_by_model(rates: Mapping[Any, float], request_class: str = INTERACTIVE) -> Dict[str, float]:
    """lambda per model of one request class, from the demand estimator's {(model, class): rate}."""
    out: Dict[str, float] = {}
    for key, rate in rates.items():
        if isinstance(key, tuple) and key[1] == request_class:
            out[key[0]] = out.get(key[0], 0.0) + rate
    return out

