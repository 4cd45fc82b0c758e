"""The Controller: the Observer, the Decider and the Applier on one router, run by one thread.

    tick:  follow                 the router's slots (endpoints that joined, left, drain: ``request.slots``) ->
                                  every per-endpoint part grows or resets the slots that changed hands
           Observer.observe        signals -> per-endpoint ticks, per-model estimates        (observer.py)
           Health.update           readiness, outlier ejection, panic -> events              (health.py)
           Observer.views          per-model EndpointViews over the routable endpoints
           Decider.decide          views + facts -> Plan (mode, weights, limits, generation) (decider.py)
           Applier.offer           Plan -> the router's dispatchers (a sound plan only)    (applier.py)
           publish                 snapshot for metrics, ``tritonmix status`` and listeners
    thread (``start``): a tick every ``interval_s``; between ticks, fresh scrapes SCRAPE_LEAD of an interval
           before the next tick (so a tick reads server data about that old, not a whole interval; the tick then
           only collects them: one scrape per endpoint per tick, ``signals.TickScrapes``), readiness probes of the
           endpoints that are down or ejected, first at once, then every PROBE_PERIOD of an interval doubling up to
           one interval (``probes.ProbeBackoff``; their answers apply as they land, ``_on_ready``), and the stall
           watch every WATCH_PERIOD_S; an endpoint that came back brings the next tick forward, to no sooner than
           EARLY_TICK_GAP of an interval after the last.
Ejection has one holder, Health's OutlierDetector (``health``): the router reports request-path failures to it
(``report_failure``) and masks nothing itself while a controller runs. After a latency ejection the endpoint is on
probation (the Decider's PROBATION_SHARE of the interactive weight) for PROBATION_INTERVALS intervals (at least
PROBATION_MIN_S).
Many clients, each with its own controller, on one fleet:
    their load is not a failure   where a server is seen serving other clients, the stall watch goes by its
                                  progress between scrapes and its queue, not by the silence between our own
                                  answers (``stall``); the in-flight limits leave room for the other clients'
                                  requests the server holds (``_others``, ``queueing.effective_limit``)
    their timers do not align     each controller draws one factor f = 1 + jitter x U[-1, 1] from
                                  ``random.Random(seed)`` (seed None: the OS's entropy, so each client its own f) and
                                  runs AUTO's dwell, the ejection backoff (base and cap) and probation f times as
                                  long; each probe wait is jittered by a fresh draw of the same width. ``jitter=0.0``:
                                  f = 1 and exact timers (tests); the default JITTER is on.
Cost of a tick: O(models x n log n + dispatchers x n); no I/O (scrapes run in the source's pool).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .applier import Applier
from .decider import Decider, Facts
from .decisions import Decision, DecisionLog
from .health import Health
from .metrics import new_registry, start_exporter
from .model import EndpointView
from .deltas import EndpointTick
from .observer import Observation, Observer, PriceFeed
from .plan import Plan
from .policy import OutlierDetector
from .probes import ProbeBackoff
from .signals import HttpScraper, ProbeSettings, SignalSource, TickScrapes
from .snapshot import ControllerSnapshot, build_snapshot
from .stall import WATCH_PERIOD_S, StallWatch

__all__ = ["Controller", "PriceFeed"]

_log = logging.getLogger(__name__)

#: a tick that sees an endpoint's mu fall below this share of the previous tick's is a capacity cut
CAPACITY_CUT = 0.75
#: share of an interval before each tick at which the loop starts fresh scrapes
SCRAPE_LEAD = 0.25
#: endpoints that are down or ejected are probed for readiness every this share of an interval (between ticks)
PROBE_PERIOD = 0.2
#: an endpoint that came back (ready again, readmitted) brings the next tick forward, to no sooner than this share
#: of an interval after the last one: its weight comes from the plan
EARLY_TICK_GAP = 0.2
#: probation after a latency ejection lasts this many intervals (at least PROBATION_MIN_S)
PROBATION_INTERVALS = 4.0
PROBATION_MIN_S = 1.0
#: default width of the per-controller timer factor f = 1 + JITTER x U[-1, 1] (module docstring)
JITTER = 0.2


class Controller:
    """The policy loop over one ``Router``. ``tick()`` runs one step synchronously (tests drive it with a fake
    clock); ``start()`` runs it every ``fleet.controller.interval_s`` in a daemon thread; ``stop()`` ends it."""

    def __init__(self, fleet: Any, router: Any, *, source: Optional[SignalSource] = None,
                 clock: Callable[[], float] = time.monotonic, prices: Optional[PriceFeed] = None,
                 metrics_urls: Optional[Mapping[str, str]] = None,
                 probe_settings: Optional[ProbeSettings] = None, jitter: float = JITTER,
                 seed: Optional[int] = None, report_cadence_s: float = 0.0) -> None:
        """``probe_settings``: the client's TLS settings and probe headers, for the readiness probes and metrics
        scrapes (``ProbeSettings.for_http`` / ``for_http_aio`` / ``for_grpc``); None: plain HTTP, no headers.
        ``jitter``, ``seed``: the timer jitter (module docstring). ``report_cadence_s``: the dispatchers' counters
        arrive this far apart (a controller over client reports): the stall watch's silence allows for it."""
        s = fleet.controller
        self.fleet, self.router, self.settings, self._clock = fleet, router, s, clock
        self.n = len(fleet.endpoints)
        self._names = tuple(e.name for e in fleet.endpoints)
        self._source = source if source is not None else HttpScraper.for_fleet(
            fleet, metrics_urls, settings=probe_settings, timeout_s=s.scrape_timeout_s, clock=clock)
        self._scrapes = TickScrapes(self._source)
        live = hasattr(self._source, "set_readiness_listener")
        rng = random.Random(seed)
        #: this controller's timer factor f (module docstring): dwell, ejection backoff and probation are f times
        self.timer_factor = 1.0 + jitter * (2.0 * rng.random() - 1.0)
        f = self.timer_factor
        self._log = DecisionLog()
        self.observer = Observer(fleet, router, self._scrapes, prices)
        self.decider = Decider(s, fleet.mode, fleet.slo_s, self._names, self._log, timer_factor=f)
        self.applier = Applier(router)
        #: readiness, ejection and panic per endpoint (read it; the loop and the reports change it under a lock)
        self.health = Health(fleet, OutlierDetector(
            self.n, consecutive_failures=s.eject_consecutive_failures, base_s=s.eject_base_s * f,
            max_s=s.eject_max_s * f, max_share=s.max_ejected_share, latency_factor=s.outlier_latency_factor,
            slo_s=fleet.slo_s, probation_s=max(PROBATION_INTERVALS * s.interval_s, PROBATION_MIN_S) * f), live=live)
        self._probes = ProbeBackoff(self.n, PROBE_PERIOD * s.interval_s, s.interval_s, jitter, rng)
        self._snapshot: Optional[ControllerSnapshot] = None
        self._stop = threading.Event()
        #: set by a readiness answer that made an endpoint routable again, or a stall ejection: the loop ticks early
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._exporter: Any = None
        self._listeners: List[Callable[[ControllerSnapshot], None]] = []
        #: serialises Health between the tick and the router's request-path reports (``report_failure``)
        self._health_lock = threading.Lock()
        self._reported: List[str] = []
        self._stalls = StallWatch(self.n, slo_s=fleet.slo_s, report_cadence_s=report_cadence_s,
                                  scrape_period_s=s.interval_s)
        self.registry = new_registry(lambda: self._snapshot)
        #: the router's slots as last followed (generation and serving per slot)
        self._generations: Tuple[int, ...] = tuple([1] * self.n)
        self._serving: Tuple[bool, ...] = tuple([True] * self.n)
        if hasattr(router, "set_ejector"):
            router.set_ejector(self.report_failure)
        if hasattr(router, "add_endpoints_listener"):
            router.add_endpoints_listener(self._on_endpoints)
        if live:
            self._source.set_readiness_listener(self._on_ready)  # type: ignore[attr-defined]

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.decider.auto.mode

    @property
    def source(self) -> SignalSource:
        """The signal source the controller reads (an ``HttpScraper`` unless one was given): read it, e.g. its
        ``scrapes`` per endpoint; the controller polls it."""
        return self._source

    def decisions(self, kind: Optional[str] = None) -> List[Decision]:
        return self._log.items(kind)

    def snapshot(self) -> Optional[ControllerSnapshot]:
        return self._snapshot

    @property
    def tick_due_early(self) -> bool:
        """An endpoint came back or was ejected for a stall since the last tick: the loop ticks early."""
        return self._wake.is_set()

    @property
    def plan(self) -> Optional[Plan]:
        """The last Plan (None before the first tick)."""
        return self.decider.last

    def add_listener(self, callback: Callable[[ControllerSnapshot], None]) -> None:
        """``callback(snapshot)`` after every tick, on the controller's thread; it must be quick (tests record the
        ticks with it, a UI may redraw). An exception in it is logged, never breaks the loop."""
        self._listeners.append(callback)

    # ---- the tick --------------------------------------------------------------------------------------------
    def tick(self) -> Plan:
        """One step (module docstring); returns the Plan it applied."""
        now = self._clock()
        self.follow()
        seen = self.observer.observe(now)
        with self._health_lock:
            events = self._reported + self.health.update(now, seen.ticks, self.observer.service_s(), self._log)
            self._reported = []
            healthy = self.health.routable()
        views = self.observer.views(healthy)
        self._log_cuts(now, seen.previous_mu)
        plan = self.decider.decide(now, views, self._facts(now, seen, events, healthy))
        with self._health_lock:
            self._push_availability()
        self.applier.offer(plan)
        self._publish(now, views, seen.ticks, plan)
        return plan

    def follow(self) -> None:
        """Follow the router's slots (``Router.reap``): grow every per-endpoint part to its slot count, reset the
        slots another endpoint took (a new generation), and mark those that take no new requests (left, draining,
        not ready at the source) out of the plan. O(n); nothing to do when no slot changed."""
        if not hasattr(self.router, "reap"):
            return
        view = self.router.reap()
        if view.generations == self._generations and view.serving == self._serving:
            return
        fleet, n = view.fleet, len(view.fleet.endpoints)
        old = self._generations
        reset = [i for i in range(min(len(old), n)) if view.generations[i] != old[i]]
        fresh = reset + list(range(len(old), n))
        with self._health_lock:
            self.health.follow(fleet, view.serving, reset)
            self.observer.follow(fleet, fresh, view.serving)
            self._stalls.follow(n, reset)
            self._probes.follow(n, reset)
            if hasattr(self._source, "follow"):
                self._source.follow(fleet, view.vacant, fresh)  # type: ignore[attr-defined]
            self.fleet, self.n = fleet, n
            self._names = tuple(e.name for e in fleet.endpoints)
            self.decider.names = self._names
            self._generations, self._serving = view.generations, view.serving
        if fresh or view.drained:
            _log.info("endpoints: %d slots, %d new or reused, %d drained", n, len(fresh), len(view.drained))

    def _on_endpoints(self, change: Any) -> None:
        """The router's endpoints listener: a join or a leave brings the next tick forward (it follows then)."""
        if change.joined or change.left or change.replaced:
            self._wake.set()

    def _facts(self, now: float, seen: Observation, events: Sequence[str], healthy: Sequence[bool]) -> Facts:
        states, outliers = self.observer.states(), self.health.outliers
        return Facts(
            ticks=seen.ticks, events=events, rates=dict(self.observer.demand.rates),
            measured={m: [c.measured for c in st.capacity] for m, st in states.items()},
            slots={m: [(c.concurrency, c.service_s) for c in st.capacity] for m, st in self.observer.models.items()},
            available=healthy, panic=self.health.panic, capacity_grew=self.health.grew,
            probation=frozenset(i for i, until in enumerate(outliers.probation_until[: self.n])
                                if until is not None and now < until),  # outliers.on_probation(i, now), O(n)
            others=self._others())

    def _others(self) -> Dict[str, List[float]]:
        """Per model seen: the other clients' requests at each endpoint's server, from the tick's newest sample:

            others_i = max(0, pending_i - ours in flight_i)  where the server serves other clients (the model's
                       external_rps_i > 0, ``deltas.Deltas``), else 0 (alone, a queue is ours: a sample older
                       than our in-flight count must not read our drained queue as theirs)
        O(models x n)."""
        samples, out = self._scrapes.latest, {}
        for m, st in self.observer.models.items():
            row = [0.0] * self.n
            for i, (sample, t) in enumerate(zip(samples, st.ticks)):
                if sample is not None and t.external_rps > 0.0:
                    pending = sample.for_model(m).pending
                    row[i] = max(0.0, pending - t.in_flight) if pending == pending else 0.0
            out[m] = row
        return out

    def _log_cuts(self, now: float, previous: Mapping[str, Sequence[float]]) -> None:
        """A capacity cut (mu_i below CAPACITY_CUT of the last tick's) on an endpoint that carried interactive load
        is logged; it is not by itself a shortfall: the plan already moves the load off it, and AUTO leaves COST
        only when the cheap set left cannot hold the demand, misses rise or endpoints fail."""
        last = self.decider.last
        if last is None:
            return
        for model, before in previous.items():
            route = last.route(model)
            if route is None:
                continue
            for i, (old, est, rps) in enumerate(zip(before, self.observer.models[model].capacity,
                                                    route.plan.interactive_rps)):
                if rps > 0.0 and est.mu_rps < CAPACITY_CUT * old and last.endpoints[i] == self._names[i]:
                    name = self._names[i]
                    self._log.add(Decision(now, "capacity_cut", f"{name} ({model}): mu {old:.1f} -> "
                                           f"{est.mu_rps:.1f} req/s", endpoint=name, model=model,
                                           figures={"old_rps": old, "new_rps": est.mu_rps,
                                                    "stalled": float(est.stalled)}))

    def report_failure(self, index: int, reason: str, now: float) -> None:
        """The router's ejector (``Router.set_ejector``): a failure on the request path that ejects at once. The
        controller decides (OutlierDetector: backoff, cap, panic) and masks the endpoint before the next pick, and
        the next tick sees the ejection as a shortfall event; re-admission is the tick's. ``now`` is the router's
        clock; the controller's own is used for the state it keeps."""
        with self._health_lock:
            if index >= self.n:  # a slot the controller has not followed yet: its next tick starts it fresh
                return
            self._reported += self.health.report(self._clock(), index, reason, self._log)
            self._push_availability()

    def _stall_view(self) -> Tuple[List[Any], Sequence[int]]:
        """Every dispatcher's stats and the attempts cancelled per endpoint, read together where the router counts
        them (a client's ``Router``; a plane's ``Board``, from its clients' reports); none for a router without."""
        view = getattr(self.router, "stall_view", None)
        if view is not None:
            return view()
        return [d.stats() for d in self.router.dispatchers().values()], ()

    def watch_stalls(self) -> None:
        """Eject the endpoints that stopped answering while requests of ours wait on them (``stall``), between
        ticks; an ejection brings the next tick forward (the plan moves the rest of the load)."""
        outliers, now = self.health.outliers, self._clock()
        frozen = {i for i in range(self.n) if outliers.until[i] is not None or outliers.on_probation(i, now)}
        try:
            stats, abandoned = self._stall_view()
            stalled = self._stalls.look(now, stats, frozen, self._scrapes.newest(now), abandoned)
        except Exception:  # noqa: BLE001 - a failed look only delays what the tick will see
            _log.exception("stall watch failed")
            return
        for index, reason in stalled:
            before = self.health.outliers.ejected(index)
            self.report_failure(index, reason, self._clock())
            if not before and self.health.outliers.ejected(index):
                self._wake.set()

    def _on_ready(self, index: int, ready: Optional[bool], started_s: float) -> None:
        """The scraper's readiness listener (its thread): readiness and readmission apply as the answer lands, and
        an endpoint that became routable brings the next tick forward (its weight comes from the plan)."""
        with self._health_lock:
            self._reported += self.health.probe(self._clock(), index, ready, started_s, self._log)
            back = self._push_availability()
        if back:
            self._wake.set()

    def _push_availability(self) -> bool:
        """Push routability changes to the router; True when an endpoint became routable."""
        back = False
        for i, available in self.health.availability_changes():
            self.router.set_endpoint_available(i, available)
            back = back or available
        return back

    def watched(self) -> List[int]:
        """Endpoints that are not ready or ejected: the loop probes them between ticks."""
        ready, outliers = self.health.ready, self.health.outliers
        return [i for i in range(self.n) if not ready[i] or outliers.until[i] is not None]

    def _publish(self, now: float, views: Mapping[Optional[str], Sequence[EndpointView]],
                 ticks: Sequence[EndpointTick], plan: Plan) -> None:
        extras: Dict[str, Sequence] = {"ready": self.health.ready, "ejected": self.health.ejected_mask(),
                                       "in_flight": [t.in_flight for t in ticks],
                                       "stale_s": [t.stale_s for t in ticks]}
        per_model = []
        for m in views:
            route = plan.route(m) if m is not None else None
            per_model.append((m, views[m], (route.plan if route is not None else plan.default).assigned_rps))
        self._snapshot = build_snapshot(now, views[self.observer.primary()], plan.default, extras,
                                        dict(self.observer.demand.rates), self.decider.auto.configured,
                                        self.settings.target_utilisation, self._log.total, per_model=per_model)
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
        """Tick every interval_s (module docstring). Every time the thread reads is the injected clock's; it waits
        in real seconds for the difference, so a clock given to a started controller must advance in real time."""
        interval_s = self.settings.interval_s
        while not self._stop.is_set():
            started = self._clock()
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
            now = self._clock()
            if now >= due or (self._wake.is_set() and now >= started + EARLY_TICK_GAP * interval_s):
                return
            try:
                if not scraped and now >= scrape_at:
                    self._scrapes.lead(self._clock())
                    scraped = True
                probe = self._probes.due(now, self.watched()) if hasattr(self._source, "probe") else []
                if probe:
                    self._source.probe(probe)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a broken source only costs freshness
                _log.exception("starting scrapes failed")
            self.watch_stalls()
            wake_at = min(due, scrape_at if not scraped else due, self._probes.next_at, now + WATCH_PERIOD_S)
            waiter = self._wake
            if self._wake.is_set():  # woken early, too soon after the last tick: sleep until the gap is over
                wake_at, waiter = min(wake_at, started + EARLY_TICK_GAP * interval_s), self._stop
            waiter.wait(max(0.0, wake_at - self._clock()))

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if hasattr(self.router, "set_ejector"):
            self.router.set_ejector(None)
        if hasattr(self.router, "remove_endpoints_listener"):
            self.router.remove_endpoints_listener(self._on_endpoints)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._source.close()
        if self._exporter is not None:
            self._exporter.shutdown()
            self._exporter = None

    close = stop

    def __repr__(self) -> str:
        return f"<Controller mode={self.mode} endpoints={self.n} running={self._thread is not None}>"

