"""The Observer: one pass per tick over the signals (the router's counters, the dispatchers' stats, the newest
Triton scrape, prices, arrivals) into per-model views. It owns the state that follows the signals: the deltas,
the demand estimator, the per-model capacity estimators (``per_model.ModelState``) and the prices.

    observe(now)   -> Observation: per-endpoint ticks, the mu of every model before this tick
    views(healthy) -> {model: (EndpointView, ...)}  after Health has had its say on this tick
Cost: O(models x n + dispatchers x n) per tick; no I/O (the scrapes run in the source's own pool).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .estimators import CapacityEstimator, DemandEstimator
from .model import BATCH, INTERACTIVE, EndpointView
from .deltas import Deltas, EndpointTick, dispatcher_totals
from .per_model import ModelState, demand_by_model, model_stats, share_misses
from .queueing import QUEUE_MISS_TARGET, UNLIMITED_MISS_TARGET, slo_utilisations

__all__ = ["Observer", "Observation", "PriceFeed"]

_log = logging.getLogger(__name__)

#: a price feed: per-endpoint $/hour in fleet order, or {endpoint name: $/hour}; called once per tick, must be quick
PriceFeed = Callable[[], Union[Sequence[float], Mapping[str, float]]]


@dataclasses.dataclass(frozen=True)
class Observation:
    """One tick's reading: per-endpoint ticks, and every model's mu before the tick."""

    ticks: Sequence[EndpointTick]
    previous_mu: Mapping[str, Sequence[float]]


class Observer:
    """Signals -> per-model views (module docstring). ``router`` is read only; ``source`` gives the scrapes."""

    def __init__(self, fleet: Any, router: Any, source: Any, prices: Optional[PriceFeed] = None) -> None:
        s = fleet.controller
        self.fleet, self.router, self.source = fleet, router, source
        self.n = len(fleet.endpoints)
        #: per model: capacity per (endpoint, model), deltas, plan (per_model); the prior stands in until a model
        #: is seen (its estimators are never fed: they only turn the hints into the first weights)
        self.models: Dict[str, ModelState] = {}
        self.prior = ModelState(None, fleet)
        self.demand = DemandEstimator(s.demand_alpha)
        self._deltas = Deltas(self.n)
        self._feed = prices
        self.prices = [e.price_per_hour for e in fleet.endpoints]
        self._pools = [e.pool_name for e in fleet.endpoints]
        self._names = [e.name for e in fleet.endpoints]
        self._capacity_types = [e.capacity_type for e in fleet.endpoints]
        self._interval_s = s.interval_s
        self._last: Optional[float] = None
        #: the queue-wait tail each endpoint's SLO-safe utilisation allows (``queueing.slo_utilisation``); a control
        #: plane whose followers cannot enforce the in-flight limits sets UNLIMITED_MISS_TARGET
        self.queue_miss_target = QUEUE_MISS_TARGET

    def follow(self, fleet: Any, reset: Sequence[int], live: Sequence[bool]) -> None:
        """The set changed (``tritonmix.request.slots``): per-endpoint state up to the fleet's slots, fresh for
        ``reset`` (a new endpoint's capacity seeded from its pool's measured mates: ``ModelState.follow``)."""
        self.fleet, n = fleet, len(fleet.endpoints)
        self._deltas.grow_slots(n)
        for i in reset:
            self._deltas.reset_slot(i)
        old, fresh = list(self.prices), set(reset)  # a set: one lookup per endpoint, not a scan of ``reset``
        self.prices = [old[i] if i < len(old) and i not in fresh else e.price_per_hour
                       for i, e in enumerate(fleet.endpoints)]
        self._pools = [e.pool_name for e in fleet.endpoints]
        self._names = [e.name for e in fleet.endpoints]
        self._capacity_types = [e.capacity_type for e in fleet.endpoints]
        # the prior stands in only until a model is seen (``states``; ``models`` never shrinks): after that nothing
        # reads it, and it stops following (its pass was half of a follow's cost at 1,000 endpoints)
        for state in (self.models.values() if self.models else [self.prior]):
            state.follow(fleet, reset, live, self._pools)
        self.n = n

    def observe(self, now: float) -> Observation:
        dt_s = self._interval_s if self._last is None else max(now - self._last, 1e-9)
        self._last = now
        stats = {key: d.stats() for key, d in self.router.dispatchers().items()}
        samples = self.source.poll(now)
        in_flight, latency_s = dispatcher_totals(list(stats.values()), self.n)
        counters = self.router.endpoint_counters()[: self.n]  # a router that grew since the last follow: ours
        ticks = self._deltas.tick(now, dt_s, counters, samples, in_flight, latency_s, capacity=False)
        self._update_prices()
        self.demand.update(self.router.arrivals(), dt_s)
        previous = self._observe_models(now, dt_s, stats, samples, ticks)
        return Observation(ticks, previous)

    def states(self) -> Mapping[Optional[str], ModelState]:
        """Every model's state (the prior alone until a model is seen)."""
        return self.models if self.models else {None: self.prior}

    def primary(self) -> Optional[str]:
        """The model with the most demand (ties: by name): its service times stand for the endpoint where one
        figure per endpoint is needed (latency outliers, the snapshot's rows)."""
        if not self.models:
            return None
        lam = demand_by_model(self.demand.rates, INTERACTIVE)
        batch = demand_by_model(self.demand.rates, BATCH)
        return max(sorted(self.models), key=lambda m: lam.get(m, 0.0) + batch.get(m, 0.0))

    def service_s(self) -> List[float]:
        """The primary model's service time per endpoint."""
        return [c.service_s for c in self.states()[self.primary()].capacity]

    def views(self, healthy: Sequence[bool]) -> Dict[Optional[str], Tuple[EndpointView, ...]]:
        return {m: self._views(st, healthy) for m, st in self.states().items()}

    def _observe_models(self, now: float, dt_s: float, stats: Mapping[Tuple[str, str], Any],
                        samples: Sequence[Any], ticks: Sequence[EndpointTick]) -> Dict[str, List[float]]:
        """Feed every model's estimators (a model seen for the first time gets its own); returns the mu before."""
        by_model = model_stats(stats, self.n)
        for m in by_model:
            if m not in self.models:
                self.models[m] = ModelState(m, self.fleet)
        fresh = {m: self.models[m].interactive_delta(ms.interactive_ok) for m, ms in by_model.items()}
        misses = share_misses([t.over_slo for t in ticks], fresh)
        previous = {}
        for m, ms in by_model.items():
            previous[m] = self.models[m].mu()
            self.models[m].observe(now, dt_s, ms, misses[m], samples)
        return previous

    def _update_prices(self) -> None:
        if self._feed is None:
            return
        try:
            feed = self._feed()
            if isinstance(feed, Mapping):
                self.prices = [float(feed.get(e.name, p)) for e, p in zip(self.fleet.endpoints, self.prices)]
            else:
                self.prices = [float(p) for p in feed][: self.n]
        except Exception:  # noqa: BLE001 - a broken feed keeps the last prices
            _log.exception("price feed failed; keeping the last prices")

    def _views(self, state: ModelState, healthy: Sequence[bool]) -> Tuple[EndpointView, ...]:
        """One EndpointView per endpoint. An endpoint that other clients load is planned for the queue tail the
        model allows without limits (UNLIMITED_MISS_TARGET): our in-flight limit cannot hold their requests back.
        O(n), one tuple per endpoint (the tick's largest allocation at 1,000 endpoints)."""
        ticks, slo_s, names, pools, prices = state.ticks, self.fleet.slo_s, self._names, self._pools, self.prices
        kinds, target, capacity = self._capacity_types, self.queue_miss_target, state.capacity
        external = [t.external_rps for t in ticks] if ticks else [0.0] * len(capacity)
        slots, service_s, mu, meets, rated = CapacityEstimator.columns(capacity)
        u_slo = slo_utilisations(slots, service_s, slo_s,
                                 [UNLIMITED_MISS_TARGET if x > 0.0 else target for x in external])
        new = tuple.__new__
        return tuple([new(EndpointView, (i, names[i], pools[i], prices[i], mu[i], service_s[i], healthy[i],
                                         meets[i], external[i], kinds[i], rated[i], u_slo[i]))
                      for i in range(len(capacity))])
