"""The control loop: every ``interval_s``, read the signals, update the estimates, decide, set the weights.

    tick:  observe (router counters, dispatcher stats, newest Triton scrape)   -> per-endpoint deltas, and per
                                                                                   (endpoint, model) observations
           estimate (capacity mu_(i,m) per model, per_model.ModelState; demand lambda per (model, class); prices)
                                                                                -> EndpointViews per model
           health (readiness, outlier ejection, panic), per endpoint            -> decisions
               (ejection has one holder, the OutlierDetector: the router reports request-path failures to it,
                ``_on_failure``, and masks nothing itself while a controller runs)
           mode (AutoMode over detect_shortfall: fleet-wide misses, errors and events, and the demand of the model
                 nearest its cheap set's limit, per_model.binding)              -> decisions
           plan (make_plan per model) and apply (each dispatcher its model's weights; set_endpoint_available)
           publish (snapshot for metrics and ``tritonmix status``)
Cost: O(models x n log n + dispatchers x n) per tick; no I/O (scrapes run in HttpScraper's pool).
Between ticks: readiness answers apply as they land (``_on_ready``, on the scraper's threads, under the health
lock): an endpoint ejected for failures that a probe saw down is readmitted by its first ready probe, and a
comeback brings the next tick forward; endpoints down or ejected are probed every PROBE_PERIOD of an interval.
After a latency ejection the endpoint is on probation (PROBATION_SHARE of the interactive weight) for
PROBATION_INTERVALS intervals.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .decisions import Decision, DecisionLog
from .estimators import DemandEstimator
from .health import Health
from .metrics import new_registry, start_exporter
from .model import BATCH, INTERACTIVE, EndpointView, Plan
from .observe import Deltas, EndpointTick, Shares, dispatcher_totals
from .per_model import ModelState, binding, combine_plans, demand_by_model, model_stats, share_misses
from .plugins import build_filters, build_scorers
from .policy import AutoMode, OutlierDetector, PlanSettings, detect_shortfall, make_plan
from .policy.probation import with_trial_share
from .queueing import inflight_limit, slo_utilisation
from .signals import HttpScraper, ProbeSettings, SignalSource
from .snapshot import ControllerSnapshot, build_snapshot
from .stall import WATCH_PERIOD_S, StallWatch

__all__ = ["Controller", "PriceFeed"]

_log = logging.getLogger(__name__)

#: a price feed: per-endpoint $/hour in fleet order, or {endpoint name: $/hour}; called once per tick, must be quick
PriceFeed = Callable[[], Union[Sequence[float], Mapping[str, float]]]
#: a tick that sees an endpoint's mu fall below this share of the previous tick's is a capacity cut
CAPACITY_CUT = 0.75
#: share of an interval before each tick at which the loop starts fresh scrapes
SCRAPE_LEAD = 0.25
#: endpoints that are down or ejected are probed for readiness every this share of an interval (between ticks)
PROBE_PERIOD = 0.2
#: an endpoint that came back (ready again, readmitted) brings the next tick forward, to no sooner than this share
#: of an interval after the last one: its weight comes from the plan, and the plan waited a whole interval
EARLY_TICK_GAP = 0.2
#: probation after a latency ejection lasts this many intervals (at least one second), with this interactive share
PROBATION_INTERVALS = 4.0
PROBATION_MIN_S = 1.0
PROBATION_SHARE = 0.02


class Controller:
    """The policy loop over one ``Router``. ``tick()`` runs one step synchronously (tests drive it with a fake
    clock); ``start()`` runs it every ``fleet.controller.interval_s`` in a daemon thread; ``stop()`` ends it."""

    def __init__(self, fleet: Any, router: Any, *, source: Optional[SignalSource] = None,
                 clock: Callable[[], float] = time.monotonic, prices: Optional[PriceFeed] = None,
                 metrics_urls: Optional[Mapping[str, str]] = None,
                 probe_settings: Optional[ProbeSettings] = None) -> None:
        """``probe_settings``: the client's TLS settings and probe headers, for the readiness probes and metrics
        scrapes (``ProbeSettings.for_http`` / ``for_http_aio`` / ``for_grpc``); None: plain HTTP, no headers."""
        s = fleet.controller
        self.fleet, self.router, self.settings, self._clock = fleet, router, s, clock
        eps = fleet.endpoints
        self.n = len(eps)
        self._source = source if source is not None else HttpScraper.for_fleet(
            fleet, metrics_urls, settings=probe_settings, timeout_s=s.scrape_timeout_s, clock=clock)
        live = hasattr(self._source, "set_readiness_listener")
        #: per model: capacity per (endpoint, model), deltas, plan (per_model); the prior stands in until a model
        #: is seen (its estimators are never fed: they only turn the hints into the first weights)
        self._models: Dict[str, ModelState] = {}
        self._prior = ModelState(None, fleet)
        self._demand = DemandEstimator(s.demand_alpha)
        self._deltas = Deltas(self.n)
        self._shares = Shares()
        self._health = Health(fleet, OutlierDetector(
            self.n, consecutive_failures=s.eject_consecutive_failures, base_s=s.eject_base_s, max_s=s.eject_max_s,
            max_share=s.max_ejected_share, latency_factor=s.outlier_latency_factor, slo_s=fleet.slo_s,
            probation_s=max(PROBATION_INTERVALS * s.interval_s, PROBATION_MIN_S)), live=live)
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
        #: set by a readiness answer that made an endpoint routable again: the loop ticks early
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._exporter: Any = None
        self._listeners: List[Callable[[ControllerSnapshot], None]] = []
        #: serialises Health between the tick and the router's request-path reports (``_on_failure``)
        self._health_lock = threading.Lock()
        self._reported: List[str] = []
        self._stalls = StallWatch(self.n, slo_s=fleet.slo_s)
        self.registry = new_registry(lambda: self._snapshot)
        router.add_listener(self._on_new_dispatcher)
        if hasattr(router, "set_ejector"):
            router.set_ejector(self._on_failure)
        if live:
            self._source.set_readiness_listener(self._on_ready)  # type: ignore[attr-defined]

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
        """One step; returns the plan over every model (``combine_plans``: one model, its own plan)."""
        now = self._clock()
        dt_s = self.settings.interval_s if self._last_tick is None else max(now - self._last_tick, 1e-9)
        self._last_tick = now
        stats = {key: d.stats() for key, d in self.router.dispatchers().items()}
        samples = self._source.poll(now)
        in_flight, latency_s = dispatcher_totals(list(stats.values()), self.n)
        ticks = self._deltas.tick(now, dt_s, self.router.endpoint_counters(), samples, in_flight, latency_s,
                                  capacity=False)
        self._update_prices()
        self._demand.update(self.router.arrivals(), dt_s)
        previous = self._observe_models(now, dt_s, stats, samples, ticks)
        with self._health_lock:
            service_s = [c.service_s for c in self._states()[self._primary()].capacity]
            events = self._reported + self._health.update(now, ticks, service_s, self._log)
            self._reported = []
            healthy = self._health.routable()
        views = {m: self._views(st, healthy) for m, st in self._states().items()}
        self._log_cuts(now, previous)
        plan = self._decide(now, views, ticks, events)
        self._apply(plan)
        self._publish(now, views, ticks, plan)
        return plan

    def _observe_models(self, now: float, dt_s: float, stats: Mapping[Tuple[str, str], Any],
                        samples: Sequence[Any], ticks: Sequence[EndpointTick]) -> Dict[str, List[float]]:
        """Feed every model's estimators (a model seen for the first time gets its own); returns the mu before."""
        by_model = model_stats(stats, self.n)
        for m in by_model:
            if m not in self._models:
                self._models[m] = ModelState(m, self.fleet)
        fresh = {m: self._models[m].interactive_delta(ms.interactive_ok) for m, ms in by_model.items()}
        misses = share_misses([t.over_slo for t in ticks], fresh)
        previous = {}
        for m, ms in by_model.items():
            previous[m] = self._models[m].mu()
            self._models[m].observe(now, dt_s, ms, misses[m], samples)
        return previous

    def _states(self) -> Mapping[Optional[str], ModelState]:
        return self._models if self._models else {None: self._prior}

    def _primary(self) -> Optional[str]:
        """The model with the most demand (ties: by name): its service times stand for the endpoint where one
        figure per endpoint is needed (latency outliers, the snapshot's rows)."""
        if not self._models:
            return None
        lam = demand_by_model(self._demand.rates, INTERACTIVE)
        batch = demand_by_model(self._demand.rates, BATCH)
        return max(sorted(self._models), key=lambda m: lam.get(m, 0.0) + batch.get(m, 0.0))

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

    def _views(self, state: ModelState, healthy: Sequence[bool]) -> Tuple[EndpointView, ...]:
        eps, ticks = self.fleet.endpoints, state.ticks
        return tuple(
            EndpointView(i, eps[i].name, self._pools[i], self._prices[i], est.mu_rps, est.service_s, healthy[i],
                         est.meets_slo, ticks[i].external_rps if ticks else 0.0, eps[i].capacity_type,
                         est.rated_rps, slo_utilisation(est.concurrency, est.service_s, self.fleet.slo_s))
            for i, est in enumerate(state.capacity))

    def _log_cuts(self, now: float, previous: Mapping[str, Sequence[float]]) -> None:
        """A capacity cut (mu_i below 75% of the last tick's) on an endpoint that carried interactive load is logged;
        it is not by itself a shortfall: the plan already moves the load off it, and AUTO leaves COST only when the
        cheap set left cannot hold lambda (``demand``), misses rise or endpoints fail (switching on every cut spread
        the load over the dearest endpoints for a dwell time each time a reload stalled one endpoint)."""
        for model, before in previous.items():
            state = self._models[model]
            if state.plan is None:
                continue
            for i, (old, est) in enumerate(zip(before, state.capacity)):
                if state.plan.interactive_rps[i] > 0.0 and est.mu_rps < CAPACITY_CUT * old:
                    name = self.fleet.endpoints[i].name
                    self._log.add(Decision(now, "capacity_cut", f"{name} ({model}): mu {old:.1f} -> "
                                           f"{est.mu_rps:.1f} req/s", endpoint=name, model=model,
                                           figures={"old_rps": old, "new_rps": est.mu_rps,
                                                    "stalled": float(est.stalled)}))

    def _decide(self, now: float, views: Mapping[Optional[str], Sequence[EndpointView]],
                ticks: Sequence[EndpointTick], events: Sequence[str]) -> Plan:
        """AUTO's mode from the fleet-wide signals and the binding model's demand, then one plan per model."""
        s = self.settings
        carried = [] if self._plan is None else [e for e in events if self._carried(e)]
        fractions = self._shares.update(ticks)
        lam, lam_batch = demand_by_model(self._demand.rates, INTERACTIVE), demand_by_model(self._demand.rates, BATCH)
        room, rated, known = {}, {}, {}
        for m, vs in views.items():
            eligible = [v for v in vs if v.healthy and v.meets_slo and all(f.keep(v, INTERACTIVE) for f in self._filters)]
            room[m] = sum(v.safe_room_rps(s.target_utilisation) for v in eligible)
            rated[m] = sum(s.target_utilisation * v.service_rps for v in eligible if v.service_rps > 0.0)
            known[m] = all(self._states()[m].capacity[v.index].measured for v in eligible)
        judged = [m for m in views if known[m]] or list(views)
        m = binding({k: lam.get(k, 0.0) for k in judged}, room)
        shortfall = detect_shortfall(lam.get(m, 0.0), room[m], fractions["miss_share"], fractions["error_share"],
                                     carried, cost_margin=s.cost_margin, hysteresis=s.hysteresis,
                                     slo_miss_threshold=s.slo_miss_threshold, capacity_known=known[m],
                                     rated_capacity_rps=rated[m])
        change = self._auto.update(now, shortfall, capacity_grew=self._health.grew)
        if change is not None:
            self._log.add(Decision(now, "mode", f"mode {change.old} -> {change.new}: {', '.join(change.reasons)}",
                                   old=change.old, new=change.new, reasons=change.reasons, figures=change.figures,
                                   model=m if len(views) > 1 else None))
        plans = {}
        for k, vs in views.items():
            plans[k] = self._states()[k].plan = self._with_probation(now, make_plan(
                vs, self._auto.mode, lam.get(k, 0.0), lam_batch.get(k, 0.0), self._scorers, self._filters,
                self._plan_settings, panic=self._health.panic))
        return combine_plans(plans, lam)

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

    def watch_stalls(self) -> None:
        """Eject the endpoints that stopped answering while requests of ours wait on them (``stall``), between
        ticks; an ejection brings the next tick forward (the plan moves the rest of the load)."""
        outliers, now = self._health.outliers, self._clock()
        frozen = {i for i in range(self.n) if outliers.until[i] is not None or outliers.on_probation(i, now)}
        try:
            stalled = self._stalls.look(now, [d.stats() for d in self.router.dispatchers().values()], frozen)
        except Exception:  # noqa: BLE001 - a failed look only delays what the tick will see
            _log.exception("stall watch failed")
            return
        for index, reason in stalled:
            before = self._health.outliers.ejected(index)
            self._on_failure(index, reason, self._clock())
            if not before and self._health.outliers.ejected(index):
                self._wake.set()

    def _on_ready(self, index: int, ready: Optional[bool], started_s: float) -> None:
        """The scraper's readiness listener (its thread): readiness and readmission apply as the answer lands, and
        an endpoint that became routable brings the next tick forward (its weight comes from the plan)."""
        with self._health_lock:
            self._reported += self._health.probe(self._clock(), index, ready, started_s, self._log)
            back = self._push_availability()
        if back:
            self._wake.set()

    def _push_availability(self) -> bool:
        """Push routability changes to the router; True when an endpoint became routable."""
        back = False
        for i, available in self._health.availability_changes():
            self.router.set_endpoint_available(i, available)
            back = back or available
        return back

    def _watched(self) -> List[int]:
        """Endpoints that are not ready or ejected: the loop probes them between ticks."""
        ready, outliers = self._health.ready, self._health.outliers
        return [i for i in range(self.n) if not ready[i] or outliers.until[i] is not None]

    def _with_probation(self, now: float, plan: Plan) -> Plan:
        """Slow start after a latency ejection (``policy.probation.with_trial_share``)."""
        outliers = self._health.outliers
        trial = [i for i in range(self.n) if outliers.probation_until[i] is not None and outliers.on_probation(i, now)]
        if not trial or self._health.panic:
            return plan
        return with_trial_share(plan, trial, PROBATION_SHARE)

    def _apply(self, plan: Plan) -> None:
        """Each dispatcher gets its model's plan; the combined plan is the default for models not planned yet."""
        self._plan = plan
        with self._health_lock:
            self._push_availability()
        for model, request_class in self.router.dispatchers():
            self.router.set_weights(model, request_class, self._plan_of(model).weights(request_class))
            if request_class == INTERACTIVE and hasattr(self.router, "set_limits"):
                self.router.set_limits(model, request_class, self._limits_of(model))
        if sum(plan.interactive_weights) > 0.0:
            self.router.set_default_weights(plan.interactive_weights)

    def _limits_of(self, model: str) -> List[int]:
        """Interactive in-flight limits of a model's dispatcher (``queueing.inflight_limit`` from its estimators:
        slots C and service time s per endpoint); none (0) for a model the controller has no state for yet and for
        an endpoint on probation (no limit: no overflow goes there, ``Dispatcher.set_limits``)."""
        state = self._models.get(model)
        if state is None:
            return [0] * self.n
        slo_s, outliers, now = self.fleet.slo_s, self._health.outliers, self._clock()
        return [0 if outliers.on_probation(i, now) else inflight_limit(est.concurrency, est.service_s, slo_s)
                for i, est in enumerate(state.capacity)]

    def _plan_of(self, model: str) -> Plan:
        state = self._models.get(model)
        plan = state.plan if state is not None else None
        return plan if plan is not None else self._plan  # type: ignore[return-value]

    def _on_new_dispatcher(self, key: Tuple[str, str]) -> None:
        if self._plan is None:
            return
        plan = self._plan_of(key[0])
        if sum(plan.weights(key[1])) > 0.0:
            self.router.set_weights(key[0], key[1], plan.weights(key[1]))

    def _publish(self, now: float, views: Mapping[Optional[str], Sequence[EndpointView]],
                 ticks: Sequence[EndpointTick], plan: Plan) -> None:
        extras: Dict[str, Sequence] = {"ready": self._health.ready, "ejected": self._health.ejected_mask(),
                                       "in_flight": [t.in_flight for t in ticks],
                                       "stale_s": [t.stale_s for t in ticks]}
        states = self._states()
        per_model = [(m, views[m], states[m].plan.assigned_rps) for m in views]  # type: ignore[union-attr]
        self._snapshot = build_snapshot(now, views[self._primary()], plan, extras, dict(self._demand.rates),
                                        self._auto.configured, self.settings.target_utilisation, self._log.total,
                                        per_model=per_model)
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
        """Tick every interval_s. Scrapes are started again SCRAPE_LEAD of an interval before each tick, so the tick
        reads server data about that old rather than a whole interval (a tick takes whatever scrape has finished
        and starts the next one; without the early start, every server figure lagged by one interval). Between
        ticks, every PROBE_PERIOD of an interval, the endpoints that are down or ejected are probed for readiness
        (their answers apply as they land, ``_on_ready``); one that came back brings the tick forward (to no
        sooner than EARLY_TICK_GAP of an interval after the last)."""
        interval_s = self.settings.interval_s
        while not self._stop.is_set():
            started = time.monotonic()
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick; the last weights stay
                _log.exception("controller tick failed")
            self._between_ticks(started, interval_s)

    def _between_ticks(self, started: float, interval_s: float) -> None:
        scrape_at, due = started + interval_s * (1.0 - SCRAPE_LEAD), started + interval_s
        scraped = False
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due or (self._wake.is_set() and now >= started + EARLY_TICK_GAP * interval_s):
                return
            try:
                if not scraped and now >= scrape_at:
                    self._source.poll(self._clock())
                    scraped = True
                watched = self._watched() if hasattr(self._source, "probe") else []
                if watched:
                    self._source.probe(watched)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a broken source only costs freshness
                _log.exception("starting scrapes failed")
            self.watch_stalls()
            wake_at = min(due, scrape_at if not scraped else due, now + PROBE_PERIOD * interval_s,
                          now + WATCH_PERIOD_S)
            waiter = self._wake
            if self._wake.is_set():  # woken early, too soon after the last tick: sleep until the gap is over
                wake_at, waiter = min(wake_at, started + EARLY_TICK_GAP * interval_s), self._stop
            waiter.wait(max(0.0, wake_at - time.monotonic()))

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
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

