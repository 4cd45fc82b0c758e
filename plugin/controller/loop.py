"""The control loop: every ``interval_s``, read the signals, update the estimates, decide, set the weights.

    tick:  observe (router counters, dispatcher stats, newest Triton scrape)   -> per-endpoint deltas
           estimate (capacity mu_i, demand lambda per (model, class), prices) -> EndpointViews
           health (readiness, outlier ejection, panic)                          -> decisions
               (ejection has one holder, the OutlierDetector: the router reports request-path failures to it,
                ``_on_failure``, and masks nothing itself while a controller runs)
           mode (AutoMode over detect_shortfall)                                -> decisions
           plan (make_plan) and apply (router.set_weights / set_endpoint_available)
           publish (snapshot for metrics and ``tritonmix status``)
Cost: O(n log n + dispatchers x n) per tick; no I/O (scrapes run in HttpScraper's pool).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .decisions import Decision, DecisionLog
from .estimators import CapacityEstimator, DemandEstimator, seed_capacity
from .health import Health
from .metrics import new_registry, start_exporter
from .model import BATCH, INTERACTIVE, EndpointView, Plan
from .observe import Deltas, EndpointTick, Shares, dispatcher_totals
from .plugins import build_filters, build_scorers
from .policy import AutoMode, OutlierDetector, PlanSettings, detect_shortfall, make_plan
from .signals import HttpScraper, SignalSource
from .snapshot import ControllerSnapshot, build_snapshot

__all__ = ["Controller", "PriceFeed"]

_log = logging.getLogger(__name__)

#: a price feed: per-endpoint $/hour in fleet order, or {endpoint name: $/hour}; called once per tick, must be quick
PriceFeed = Callable[[], Union[Sequence[float], Mapping[str, float]]]
#: a tick that sees an endpoint's mu fall below this share of the previous tick's is a capacity cut
CAPACITY_CUT = 0.75


class Controller:
    """The policy loop over one ``Router``. ``tick()`` runs one step synchronously (tests drive it with a fake
    clock); ``start()`` runs it every ``fleet.controller.interval_s`` in a daemon thread; ``stop()`` ends it."""

    def __init__(self, fleet: Any, router: Any, *, source: Optional[SignalSource] = None,
                 clock: Callable[[], float] = time.monotonic, prices: Optional[PriceFeed] = None,
                 metrics_urls: Optional[Mapping[str, str]] = None) -> None:
        s = fleet.controller
        self.fleet, self.router, self.settings, self._clock = fleet, router, s, clock
        eps = fleet.endpoints
        self.n = len(eps)
        self._source = source if source is not None else HttpScraper.for_fleet(
            fleet, metrics_urls, timeout_s=s.scrape_timeout_s, clock=clock)
        self._capacity = [CapacityEstimator(seed_capacity(e.max_rps, e.max_concurrency, s.default_capacity_rps),
                                            e.max_concurrency, slo_s=fleet.slo_s, slo_miss_threshold=s.slo_miss_threshold,
                                            alpha_down=s.capacity_alpha_down, alpha_up=s.capacity_alpha_up,
                                            hinted=bool(e.max_rps)) for e in eps]
        self._demand = DemandEstimator(s.demand_alpha)
        self._deltas = Deltas(self.n)
        self._shares = Shares()
        self._health = Health(fleet, OutlierDetector(
            self.n, consecutive_failures=s.eject_consecutive_failures, base_s=s.eject_base_s, max_s=s.eject_max_s,
            max_share=s.max_ejected_share, latency_factor=s.outlier_latency_factor, slo_s=fleet.slo_s))
        self._auto = AutoMode(fleet.mode, s.dwell_s, s.hysteresis)
        self._scorers, self._filters = build_scorers(s.scorers), build_filters(s.filters)
        self._plan_settings = PlanSettings(s.target_utilisation, s.probe_share)
        self._prices_feed = prices
        self._prices = [e.price_per_hour for e in eps]
        self._pools = [e.accelerator for e in eps]
        self._log = DecisionLog()
        self._plan: Optional[Plan] = None
        self._snapshot: Optional[ControllerSnapshot] = None
        self._last_tick: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._exporter: Any = None
        self._listeners: List[Callable[[ControllerSnapshot], None]] = []
        #: serialises Health between the tick and the router's request-path reports (``_on_failure``)
        self._health_lock = threading.Lock()
        self._reported: List[str] = []
        self.registry = new_registry(lambda: self._snapshot)
        router.add_listener(self._on_new_dispatcher)
        if hasattr(router, "set_ejector"):
            router.set_ejector(self._on_failure)

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._auto.mode

    def decisions(self, kind: Optional[str] = None) -> List[Decision]:
        return self._log.items(kind)

    def snapshot(self) -> Optional[ControllerSnapshot]:
        return self._snapshot

    @property
    def plan(self) -> Optional[Plan]:
        return self._plan

    def add_listener(self, callback: Callable[[ControllerSnapshot], None]) -> None:
        """``callback(snapshot)`` after every tick, on the controller's thread; it must be quick (tests record the
        ticks with it, a UI may redraw). An exception in it is logged, never breaks the loop."""
        self._listeners.append(callback)

    # ---- the tick --------------------------------------------------------------------------------------------
    def tick(self) -> Plan:
        now = self._clock()
        dt_s = self.settings.interval_s if self._last_tick is None else max(now - self._last_tick, 1e-9)
        self._last_tick = now
        ticks = self._observe(now, dt_s)
        self._update_prices()
        previous = [c.mu_rps for c in self._capacity]
        for est, t in zip(self._capacity, ticks):
            est.update(t.capacity)
        self._demand.update(self.router.arrivals(), dt_s)
        with self._health_lock:
            events = self._reported + self._health.update(now, ticks, [c.service_s for c in self._capacity],
                                                          self._log)
            self._reported = []
            views = self._views(ticks)
        self._log_cuts(now, previous)
        plan = self._decide(now, views, ticks, events)
        self._apply(plan)
        self._publish(now, views, ticks, plan)
        return plan

    def _observe(self, now: float, dt_s: float) -> List[EndpointTick]:
        stats = [d.stats() for d in self.router.dispatchers().values()]
        in_flight, latency_s = dispatcher_totals(stats, self.n)
        samples = self._source.poll(now)
        return self._deltas.tick(now, dt_s, self.router.endpoint_counters(), samples, in_flight, latency_s)

    def _update_prices(self) -> None:
        if self._prices_feed is None:
            return
        try:
            feed = self._prices_feed()
            if isinstance(feed, Mapping):
                self._prices = [float(feed.get(e.name, p)) for e, p in zip(self.fleet.endpoints, self._prices)]
            else:
                self._prices = [float(p) for p in feed][: self.n]
        except Exception:  # noqa: BLE001 - a broken feed keeps the last prices
            _log.exception("price feed failed; keeping the last prices")

    def _views(self, ticks: Sequence[EndpointTick]) -> Tuple[EndpointView, ...]:
        eps, healthy = self.fleet.endpoints, self._health.routable()
        return tuple(
            EndpointView(i, eps[i].name, self._pools[i], self._prices[i], est.mu_rps, est.service_s, healthy[i],
                         est.meets_slo, ticks[i].external_rps, eps[i].capacity_type,
                         est.rated_rps)
            for i, est in enumerate(self._capacity))

    def _log_cuts(self, now: float, previous: Sequence[float]) -> None:
        """A capacity cut (mu_i below 75% of the last tick's) on an endpoint that carried interactive load is logged;
        it is not by itself a shortfall: the plan already moves the load off it, and AUTO leaves COST only when the
        cheap set left cannot hold lambda (``demand``), misses rise or endpoints fail (switching on every cut spread
        the load over the dearest endpoints for a dwell time each time a reload stalled one endpoint)."""
        if self._plan is None:
            return
        for i, (old, est) in enumerate(zip(previous, self._capacity)):
            if self._plan.interactive_rps[i] > 0.0 and est.mu_rps < CAPACITY_CUT * old:
                name = self.fleet.endpoints[i].name
                self._log.add(Decision(now, "capacity_cut", f"{name}: mu {old:.1f} -> {est.mu_rps:.1f} req/s",
                                       endpoint=name, figures={"old_rps": old, "new_rps": est.mu_rps,
                                                               "stalled": float(est.stalled)}))

    def _decide(self, now: float, views: Sequence[EndpointView], ticks: Sequence[EndpointTick],
                events: Sequence[str]) -> Plan:
        s = self.settings
        carried = [] if self._plan is None else [e for e in events if self._carried(e)]
        fractions = self._shares.update(ticks)
        eligible = [v for v in views
                    if v.healthy and v.meets_slo and all(f.keep(v, INTERACTIVE) for f in self._filters)]
        cheap = sum(v.room_rps(s.target_utilisation) for v in eligible)
        rated = sum(s.target_utilisation * v.service_rps for v in eligible if v.service_rps > 0.0)
        known = all(self._capacity[v.index].measured for v in eligible)
        shortfall = detect_shortfall(self._demand.total(INTERACTIVE), cheap, fractions["miss_share"],
                                     fractions["error_share"], carried, cost_margin=s.cost_margin,
                                     hysteresis=s.hysteresis, slo_miss_threshold=s.slo_miss_threshold,
                                     capacity_known=known, rated_capacity_rps=rated)
        change = self._auto.update(now, shortfall, capacity_grew=self._health.grew)
        if change is not None:
            self._log.add(Decision(now, "mode", f"mode {change.old} -> {change.new}: {', '.join(change.reasons)}",
                                   old=change.old, new=change.new, reasons=change.reasons, figures=change.figures))
        return make_plan(views, self._auto.mode, self._demand.total(INTERACTIVE), self._demand.total(BATCH),
                         self._scorers, self._filters, self._plan_settings, panic=self._health.panic)

    def _carried(self, event: str) -> bool:
        """Events name an endpoint; only one that carried interactive load in the last plan is a shortfall."""
        name = event.partition(":")[2]
        i = self.fleet.names.index(name) if name in self.fleet.names else -1
        return i >= 0 and self._plan is not None and self._plan.interactive_rps[i] > 0.0

    def _on_failure(self, index: int, reason: str, now: float) -> None:
        """The router's ejector (``Router.set_ejector``): a failure on the request path that ejects at once. The
        controller decides (OutlierDetector: backoff, cap, panic) and masks the endpoint before the next pick, and
        the next tick sees the ejection as a shortfall event; re-admission is the tick's. ``now`` is the router's
        clock; the controller's own is used for the state it keeps."""
        with self._health_lock:
            self._reported += self._health.report(self._clock(), index, reason, self._log)
            self._push_availability()

    def _push_availability(self) -> None:
        for i, available in self._health.availability_changes():
            self.router.set_endpoint_available(i, available)

    def _apply(self, plan: Plan) -> None:
        self._plan = plan
        with self._health_lock:
            self._push_availability()
        for model, request_class in self.router.dispatchers():
            self.router.set_weights(model, request_class, plan.weights(request_class))
        if sum(plan.interactive_weights) > 0.0:
            self.router.set_default_weights(plan.interactive_weights)

    def _on_new_dispatcher(self, key: Tuple[str, str]) -> None:
        plan = self._plan
        if plan is not None and sum(plan.weights(key[1])) > 0.0:
            self.router.set_weights(key[0], key[1], plan.weights(key[1]))

    def _publish(self, now: float, views: Sequence[EndpointView], ticks: Sequence[EndpointTick], plan: Plan) -> None:
        extras: Dict[str, Sequence] = {"ready": self._health.ready, "ejected": self._health.ejected_mask(),
                                       "in_flight": [t.in_flight for t in ticks],
                                       "stale_s": [t.stale_s for t in ticks]}
        self._snapshot = build_snapshot(now, views, plan, extras, dict(self._demand.rates), self._auto.configured,
                                        self.settings.target_utilisation, self._log.total)
        for callback in self._listeners:
            try:
                callback(self._snapshot)
            except Exception:  # noqa: BLE001 - an observer must not break the loop
                _log.exception("controller listener failed")

    # ---- the thread --------------------------------------------------------------------------------------------
    def start(self) -> "Controller":
        if self._thread is not None:
            return self
        if self.settings.metrics_port is not None:
            self._exporter = start_exporter(self.registry, self.settings.metrics_port, self.settings.metrics_host)
        self._thread = threading.Thread(target=self._run, name="tritonmix-controller", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick; the last weights stay
                _log.exception("controller tick failed")
            self._stop.wait(self.settings.interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if hasattr(self.router, "set_ejector"):
            self.router.set_ejector(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._source.close()
        if self._exporter is not None:
            self._exporter.shutdown()
            self._exporter = None

    close = stop

    def __repr__(self) -> str:
        return f"<Controller mode={self.mode} endpoints={self.n} running={self._thread is not None}>"

