"""The Router: one per client; owns one ``Dispatcher`` and its ``Lane`` per (model, request class) and the masks
they obey.

Contract with the controller (``tritonmix.controller.start_controller(fleet, router)``)::

    router.fleet                               endpoints in index order (index i = fleet.endpoints[i])
    router.endpoint_names()                    tuple of names
    router.dispatchers()                       {(model, request_class): Dispatcher}, a snapshot; created lazily
    router.set_weights(model, rc, weights)     explicit weights of one dispatcher (kept across later changes)
    router.set_limits(model, rc, limits)       in-flight limits of one dispatcher (0 = none; the controller's)
    router.set_default_weights(weights)        for dispatchers created later and those without explicit weights
    router.set_endpoint_available(i, bool)     the controller's health / ejection mask, on every dispatcher
    router.arrivals()                          {(model, rc): user requests so far} (retries not counted)
    router.lane(model, rc)                     the Lane of (model, rc) (dispatch_core.Lane: begin, pick, succeeded,
                                               failed), created on first use
    router.endpoint_counters()                 [(completed_ok, over_slo, failed_attempts)] per endpoint
    router.stall_view()                        (every dispatcher's stats, abandoned attempts per endpoint) read
                                               together: ``record_abandoned`` (a hedge's cancelled loser) is counted
                                               in both or neither (the stall watch does not take it for an answer)
    router.add_listener(cb)                    cb((model, rc)) after a dispatcher is created (remove_listener(cb))
    router.set_ejector(cb)                     cb(i, reason, now) decides ejection instead of the router (or None)
    router.apply_endpoints(states)             reconcile with a discovered set (``tritonmix.discovery``), by name:
                                               an ``EndpointChange`` by slot; ``add_endpoints_listener(cb)``: cb(change)
                                               after each one that changed something (and after ``reap``)
    router.vacant()                            per slot: its endpoint left (the slot waits for reuse)

Endpoints that join and leave (``tritonmix.request.slots``): index i is a slot. A new endpoint takes a vacant slot
whose requests have all been recorded (fresh state in every dispatcher, the tally and the masks), else a new slot at
the end; one that leaves is removed from every dispatcher at once (never picked again; what it still has in flight
is recorded there) and its slot waits for reuse; a terminating or not-ready one stays, masked off (a fourth mask,
``serving``), until it turns ready or leaves. Slots never move and never shrink.

Availability of endpoint i in the dispatcher of model m is the AND of four masks:
    serving[i]         the discovery source's ready and not terminating (True for a fleet given as a list)
    controller[i]      set_endpoint_available (default True)
    not ejected[i]     the client's own passive ejection after connection failures (Envoy's outlier detection:
                       eject on a failure that never reached the server, or after eject_consecutive_failures in a
                       row), decided by an ``OutlierDetector`` (``tritonmix.request.ejection``: the backoff and the
                       cap, never more than max_ejected_share of the fleet) and readmitted lazily when the time is
                       up; used only while no controller runs: ``set_ejector(cb)`` hands the decision to the
                       controller's own detector, and the router then only reports the failure, ``cb(i, reason, now)``
    ready[m][i]        model readiness as last probed (unknown counts as ready; a model ready nowhere keeps every
                       endpoint, so the servers' own "unknown model" error reaches the user)
Thread safety: one lock guards the masks, the dispatcher table and the rarely written counters. The hot path
takes no lock: it reads the lane table (a dict lookup) and runs the lane (``tritonmix.dispatch_core.Lane``,
compiled): arrivals, the retry budget's request count and the successes per endpoint are counted there, and the
lane calls back into the router only when an ejected endpoint is due back (``readmit_due``), a success ends a
failure streak or misses the SLO (``note_success``), or an attempt failed (``failed``).

Per request (every client, every driver)::

    lane = router.lanes.get((model, request_class)) or router.lane(model, request_class)
    t0 = lane.begin();  i = lane.pick()  ...send...  lane.succeeded(i, t0)   # or lane.failed(i, t0, outcome)
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
import zlib
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..dispatch_core import Dispatcher, EndpointTally, Lane
from ..fleet import EndpointSpec, Fleet
from .ejection import OutlierDetector
from .slots import EndpointChange
from .retry import Outcome, RetryBudget

__all__ = ["Router", "REQUEST_CLASSES", "hint_weights"]

logger = logging.getLogger(__name__)

REQUEST_CLASSES = ("interactive", "batch")
Key = Tuple[str, str]


def _state(state: Any) -> Tuple[EndpointSpec, bool]:
    """(spec, serving) of an ``EndpointState`` or a bare ``EndpointSpec`` (ready)."""
    if isinstance(state, EndpointSpec):
        return state, True
    return state.spec, bool(state.serving)


def hint_weights(fleet: Fleet, vacant: Optional[Sequence[bool]] = None) -> List[float]:
    """Static weights from the fleet's capacity hints: max_rps when every endpoint has it, else max_concurrency
    when every endpoint has it, else equal; 0 for a vacant slot (``vacant[i]``), whose hints are not counted."""
    eps = fleet.endpoints
    gone = vacant if vacant is not None else [False] * len(eps)
    live = [e for e, v in zip(eps, gone) if not v]
    if all(e.max_rps for e in live):
        values = [float(e.max_rps or 0.0) for e in eps]
    elif all(e.max_concurrency for e in live):
        values = [float(e.max_concurrency or 0) for e in eps]
    else:
        values = [1.0] * len(eps)
    return [0.0 if v else w for w, v in zip(values, gone)]


class Router:
    """Thread-safe; one per client. See the module docstring for the contract and the availability masks."""

    def __init__(self, fleet: Fleet, *, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        n = len(fleet.endpoints)
        self._n = n
        self._names = tuple(e.name for e in fleet.endpoints)
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        self._dispatchers: Dict[Key, Dispatcher] = {}
        self._explicit: Dict[Key, Tuple[float, ...]] = {}
        self._default = tuple(hint_weights(fleet))
        self._controller_mask = [True] * n
        self._ready: Dict[str, List[bool]] = {}
        s = fleet.controller
        #: the router's own ejection while no controller runs (module docstring)
        self._outliers = OutlierDetector(n, consecutive_failures=s.eject_consecutive_failures, base_s=s.eject_base_s,
                                         max_s=s.eject_max_s, max_share=s.max_ejected_share, min_cap=0)
        #: successes and failure streaks per endpoint, and when the next ejected endpoint is due back: what every
        #: lane touches (compiled, shared by the lanes)
        self.tally = EndpointTally(n)
        #: every lane, and the published table of the fast path (a lane joins it once its listeners have run)
        self._lane_of: Dict[Key, Lane] = {}
        self._lanes: Dict[Key, Lane] = {}
        self._over_slo = [0] * n
        self._failed = [0] * n
        #: per endpoint: attempts that ended because we cancelled them (a hedge's loser), recorded as completions
        self._abandoned = [0] * n
        self._listeners: List[Callable[[Key], None]] = []
        self._ejector: Optional[Callable[[int, str, float], None]] = None
        self.budget = RetryBudget(s.retry_budget_share, clock=clock)
        self._slo_s = fleet.slo_s
        #: churn (module docstring): the discovery mask, vacant slots, live names -> slot, and the listeners
        self._serving = [True] * n
        self._vacant = [False] * n
        self._last_resort_after = -1  # the previous last resort (``last_resort``)
        self._slot_of: Dict[str, int] = {e.name: i for i, e in enumerate(fleet.endpoints)}
        self._endpoint_listeners: List[Callable[[EndpointChange], None]] = []
        self._reaped: Set[int] = set()
        self._generation = [1] * n

    # ---- the contract ----------------------------------------------------------------------------------------

    def endpoint_names(self) -> Tuple[str, ...]:
        return self._names

    def dispatchers(self) -> Dict[Key, Dispatcher]:
        with self._lock:
            return dict(self._dispatchers)

    def set_weights(self, model: str, request_class: str, weights: Sequence[float]) -> None:
        values = tuple(float(w) for w in weights)
        d = self.dispatcher(model, request_class)
        with self._lock:
            d.set_weights(values)
            self._explicit[(model, request_class)] = values

    def set_limits(self, model: str, request_class: str, limits: Sequence[int]) -> None:
        """In-flight limits of one dispatcher (``Dispatcher.set_limits``: 0 = none; a full endpoint's picks
        overflow to one under its limit)."""
        values = tuple(int(x) for x in limits)
        d = self.dispatcher(model, request_class)
        with self._lock:
            d.set_limits(values)

    def set_default_weights(self, weights: Sequence[float]) -> None:
        values = tuple(float(w) for w in weights)
        if len(values) != self._n:
            raise ValueError(f"weights has length {len(values)}, expected {self._n}")
        with self._lock:
            self._default = values
            for key, d in self._dispatchers.items():
                if key not in self._explicit:
                    d.set_weights(values)

    def set_endpoint_available(self, index: int, available: bool) -> None:
        with self._lock:
            self._controller_mask[self._check(index)] = bool(available)
            self._apply_all(index)

    def arrivals(self) -> Dict[Key, int]:
        with self._lock:
            return {key: lane.arrivals for key, lane in self._lane_of.items()}

    def endpoint_counters(self) -> List[Tuple[int, int, int]]:
        with self._lock:
            return list(zip(self.tally.successes(), self._over_slo, self._failed))

    def record_abandoned(self, d: Dispatcher, i: int, latency_s: float) -> None:
        """Record an attempt on endpoint i of dispatcher d that ended because we cancelled it (a hedge's loser): a
        completion for the dispatcher (its pick is matched; it did not fail, it was slower), counted apart so that the
        stall watch does not read it as an answer of the server (``stall_view``)."""
        with self._lock:
            self._abandoned[i] += 1
            d.record(i, latency_s, True)

    def stall_view(self) -> Tuple[List[Any], Tuple[int, ...]]:
        """Every dispatcher's stats and the abandoned attempts per endpoint, read together (``record_abandoned``)."""
        with self._lock:
            return [d.stats() for d in self._dispatchers.values()], tuple(self._abandoned)

    def add_listener(self, callback: Callable[[Key], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Key], None]) -> None:
        """Forget ``callback`` (added by ``add_listener``); nothing when it is not there."""
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def set_ejector(self, ejector: Optional[Callable[[int, str, float], None]]) -> None:
        """Hand ejection to ``ejector(i, reason, now)`` (called outside the lock on each failure that would eject);
        the router's own ejection is off while one is set. None: the router's own again."""
        with self._lock:
            self._ejector = ejector

    # ---- endpoints that join and leave (module docstring) ---------------------------------------------------

    def vacant(self) -> Tuple[bool, ...]:
        """Per slot: its endpoint left (removed from every dispatcher; the slot waits for reuse)."""
        with self._lock:
            return tuple(self._vacant)

    def serving(self) -> Tuple[bool, ...]:
        """Per slot: the discovery source's ready and not terminating (vacant slots: False)."""
        with self._lock:
            return tuple(s and not v for s, v in zip(self._serving, self._vacant))

    def add_endpoints_listener(self, callback: Callable[[EndpointChange], None]) -> None:
        """``callback(change)`` after every reconcile that changed something, under the router's lock and before a
        newcomer can be picked (the client makes its per-endpoint clients there, closes those of drained slots, the
        controller wakes): it must be quick and must not call the router."""
        with self._lock:
            self._endpoint_listeners.append(callback)

    def remove_endpoints_listener(self, callback: Callable[[EndpointChange], None]) -> None:
        with self._lock:
            if callback in self._endpoint_listeners:
                self._endpoint_listeners.remove(callback)

    def apply_endpoints(self, states: Sequence[Any]) -> EndpointChange:
        """Reconcile with the whole current set (``tritonmix.discovery.EndpointState``s, or bare ``EndpointSpec``s
        for ready ones), by name: joins, drains, leaves and in-place spec changes (module docstring). ValueError
        for two states of one name or one without a url; nothing changes then. Listeners hear the change."""
        wanted: Dict[str, Tuple[EndpointSpec, bool]] = {}
        for state in states:
            spec, serving = _state(state)
            if spec.name in wanted:
                raise ValueError(f"endpoint {spec.name!r} appears twice in the discovered set")
            if not spec.url:
                raise ValueError(f"endpoint {spec.name!r} has no url; a discovered endpoint needs one")
            wanted[spec.name] = (spec, serving)
        with self._lock:
            change, touched = self._reconcile(wanted)
            if not change.empty:
                self._tell(change)
            if change.joined or change.left or change.replaced:
                self._refresh_defaults()  # from here on a newcomer can be picked
            for key in self._dispatchers:
                for i in touched:
                    self._dispatchers[key].set_available(i, self._available(key[0], i))
        return change

    def reap(self) -> EndpointChange:
        """The slots now, and the vacant ones whose last request in flight has been recorded since the last look
        (``drained``: the client closes the left endpoint's own client then); the controller calls it every tick
        (its listeners hear only a change with something drained)."""
        with self._lock:
            change = self._change(drained=self._drained())
            if change.drained:
                self._tell(change)
        return change

    # ---- hot path ------------------------------------------------------------------------------------------

    @property
    def lanes(self) -> Dict[Key, Lane]:
        """{(model, request_class): Lane}, the live table (read it, never write it): a key appears once its
        dispatcher exists and the listeners (the first readiness probe) have run. ``lane()`` creates one."""
        return self._lanes

    def dispatcher(self, model: str, request_class: str = "interactive") -> Dispatcher:
        """The dispatcher of (model, request_class), created on first use (listeners are told then)."""
        d = self._dispatchers.get((model, request_class))
        return d if d is not None else self._create((model, request_class))

    def lane(self, model: str, request_class: str = "interactive") -> Lane:
        """The Lane of (model, request_class), created with its dispatcher on first use."""
        lane = self._lane_of.get((model, request_class))
        if lane is None:
            self._create((model, request_class))
            lane = self._lane_of[(model, request_class)]
        return lane

    def note_success(self, i: int, latency_s: float, request_class: str) -> None:
        """A lane's success that ended a failure streak of i or missed the SLO (the success itself is counted by the
        lane): end the streak and count an SLO miss of an interactive request."""
        with self._lock:
            self.tally.set_streak(i, 0)
            if latency_s > self._slo_s and request_class == "interactive":
                self._over_slo[i] += 1

    def failed(self, i: int, outcome: Outcome, now: float) -> None:
        """Count a failed attempt; eject the endpoint after a connection failure (see the module docstring)."""
        with self._lock:
            self._failed[i] += 1
            if outcome is Outcome.REQUEST:
                self.tally.set_streak(i, 0)
                return
            streak = self.tally.streak(i) + 1
            self.tally.set_streak(i, streak)
            limit = max(1, self.fleet.controller.eject_consecutive_failures)
            if outcome is not Outcome.NOT_SENT and streak < limit:
                return
            ejector = self._ejector
            reason = "connection failure" if outcome is Outcome.NOT_SENT else "consecutive failures"
            if ejector is None:
                self._eject(i, reason, now)
                return
        ejector(i, reason, now)

    # ---- readiness and ejection ------------------------------------------------------------------------------

    def set_model_ready(self, model: str, ready: Sequence[Optional[bool]]) -> None:
        """Readiness of ``model`` per endpoint (None: unknown, counts as ready). Ready nowhere: every endpoint."""
        mask = [r is not False for r in ready]
        with self._lock:
            if not any(mask):
                mask = [True] * self._n
            mask = (mask + [True] * self._n)[: self._n]  # probed before the set grew: the newcomers are unknown
            if self._ready.get(model) == mask:
                return
            self._ready[model] = mask
            for key in self._dispatchers:
                if key[0] == model:
                    self._apply_key(key)
        logger.info("model %s ready on %s", model, [n for n, r in zip(self._names, mask) if r])

    def models(self) -> Tuple[str, ...]:
        with self._lock:
            return tuple(sorted({k[0] for k in self._dispatchers}))

    def ready_mask(self, model: str) -> List[bool]:
        with self._lock:
            return list(self._ready.get(model, [True] * self._n))

    def ejected(self) -> List[bool]:
        """Per endpoint: ejected, by the router itself or by the controller's mask."""
        with self._lock:
            return [t is not None or not c for t, c in zip(self._outliers.until, self._controller_mask)]

    def ejected_by_router(self) -> List[bool]:
        """Per endpoint: ejected by the router's own detector (always False while a controller holds ejection)."""
        with self._lock:
            return [t is not None for t in self._outliers.until]

    def last_resort(self, model: str, exclude: AbstractSet[int]) -> Optional[int]:
        """An endpoint for a retry that the masks and weights leave nowhere to go: one not in ``exclude`` (the
        request's tried ones), still in the set and serving, ready for ``model`` as last probed, but ejected,
        masked by the controller or weighted 0; the one with the shortest failure streak (ties: the lowest index
        after the previous last resort's, so that they spread). None: there is none. A request that would fail
        while an endpoint it did not try is up again (ejected for a restart that has ended, its backoff not yet
        over) gets one more attempt instead (``tritonmix.request.attempts``)."""
        with self._lock:
            ready = self._ready.get(model)
            n = self._n
            start = self._last_resort_after + 1
            best: Optional[int] = None
            for k in range(n):
                i = (start + k) % n
                if i in exclude or self._vacant[i] or not self._serving[i] or (ready is not None and not ready[i]):
                    continue
                if best is None or self.tally.streak(i) < self.tally.streak(best):
                    best = i
            if best is not None:
                self._last_resort_after = best
            return best

    def is_available(self, model: str, i: int) -> bool:
        """Whether endpoint ``i`` may take requests for ``model`` now (all three masks)."""
        with self._lock:
            return self._available(model, i)

    def _eject(self, i: int, reason: str, now: float) -> None:
        event = self._outliers.report(now, i, reason)
        if event is None or event.kind != "eject":
            return
        until = self._outliers.until[i]
        self.tally.readmit_at = min(self.tally.readmit_at, until if until is not None else math.inf)
        self._apply_all(i)
        logger.warning("endpoint %s ejected for %.1f s: %s", self._names[i], event.figures["backoff_s"], reason)

    def readmit_due(self, now: float) -> None:
        """Readmit the endpoints the router ejected whose time is up (the lanes call it when ``tally.readmit_at``
        has passed)."""
        with self._lock:
            for event in self._outliers.readmit_due(now):
                self.tally.set_streak(event.index, 0)
                self._apply_all(event.index)
                logger.info("endpoint %s readmitted", self._names[event.index])
            self.tally.readmit_at = min((u for u in self._outliers.until if u is not None), default=math.inf)

    # ---- internals (lock held) -----------------------------------------------------------------------------

    def _create(self, key: Key) -> Dispatcher:
        with self._lock:
            d = self._dispatchers.get(key)
            if d is not None:
                return d
            seed = None if self._seed is None else self._seed ^ zlib.crc32("\0".join(key).encode())
            d = Dispatcher(self._n, seed=seed)
            d.set_weights(self._explicit.get(key, self._default))
            for i in range(self._n):
                if self._vacant[i]:
                    d.remove(i)
            self._dispatchers[key] = d
            slo_s = self._slo_s if key[1] == "interactive" else math.inf
            lane = Lane(d, self.tally, self.budget.requests, self._clock, slo_s, self.readmit_due,
                        functools.partial(self._lane_success, key[1]), self.failed)
            self._lane_of[key] = lane
            self._apply_key(key)
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(key)
            except Exception:  # noqa: BLE001 - a listener must not break a request
                logger.exception("dispatcher listener failed for %s", key)
        with self._lock:
            self._lanes[key] = lane
        return d

    def _lane_success(self, request_class: str, i: int, latency_s: float) -> None:
        self.note_success(i, latency_s, request_class)

    def _available(self, model: str, i: int) -> bool:
        ready = self._ready.get(model)
        return (self._controller_mask[i] and self._outliers.until[i] is None and self._serving[i]
                and (ready is None or ready[i]))

    def _reconcile(self, wanted: Dict[str, Tuple[EndpointSpec, bool]]) -> Tuple[EndpointChange, Set[int]]:
        """apply_endpoints under the lock: leaves first (their slots may be reused at once when idle), then the
        known names, then the newcomers (weight 0 until the caller refreshes the weights). Returns the change and
        the slots whose availability may have changed."""
        slots = list(self.fleet.endpoints)
        left = [self._slot_of.pop(name) for name in list(self._slot_of) if name not in wanted]
        for i in left:
            self._vacant[i] = True
            self._serving[i] = False
            for d in self._dispatchers.values():
                d.remove(i)
        drained = self._drained()
        joined, replaced, touched = [], [], set(left)
        free = [i for i in range(self._n) if self._vacant[i] and self._idle(i)]
        for name, (spec, serving) in wanted.items():
            i = self._slot_of.get(name)
            if i is None:
                i = free.pop(0) if free else self._grow_slot()
                self._reset_slot(i)
                self._slot_of[name] = i
                joined.append(i)
            elif spec is not slots[i] and spec != slots[i]:
                replaced.append(i)
            if i < len(slots):
                slots[i] = spec
            else:
                slots.append(spec)
            if self._serving[i] != serving or i in joined:
                touched.add(i)
            self._serving[i] = serving
        self.fleet = dataclasses.replace(self.fleet, endpoints=tuple(slots))
        self._names = tuple(e.name for e in slots)
        return self._change(tuple(joined), tuple(left), tuple(replaced), drained), touched

    def _change(self, joined: Tuple[int, ...] = (), left: Tuple[int, ...] = (), replaced: Tuple[int, ...] = (),
                drained: Tuple[int, ...] = ()) -> EndpointChange:
        return EndpointChange(self.fleet, joined, left, replaced, drained, tuple(self._vacant),
                              tuple(s and not v for s, v in zip(self._serving, self._vacant)),
                              tuple(self._generation))

    def _idle(self, i: int) -> bool:
        return all(d.in_flight(i) == 0 for d in self._dispatchers.values())

    def _drained(self) -> Tuple[int, ...]:
        """Vacant slots not yet reported drained whose requests have all been recorded."""
        out = tuple(i for i in range(self._n) if self._vacant[i] and i not in self._reaped and self._idle(i))
        self._reaped.update(out)
        return out

    def _grow_slot(self) -> int:
        """One more slot at the end (the tally first: a lane records on any slot its dispatcher has)."""
        i = self._n
        self._n += 1
        self.tally.resize(self._n)
        for d in self._dispatchers.values():
            d.resize(self._n)
            d.remove(i)  # a stand-in until _reset_slot: every slot a newcomer takes is removed first
        self._controller_mask.append(True)
        self._serving.append(False)
        self._vacant.append(True)  # until _reset_slot hands it over
        self._generation.append(0)
        self._over_slo.append(0)
        self._failed.append(0)
        self._abandoned.append(0)
        self._outliers.grow_slots(self._n)
        for mask in self._ready.values():
            mask.append(True)
        self._default = self._default + (0.0,)
        self._explicit = {k: v + (0.0,) for k, v in self._explicit.items()}
        return i

    def _reset_slot(self, i: int) -> None:
        """Slot i (vacant and idle) for a new endpoint: fresh state everywhere, weight 0 until a plan or the
        defaults give it one."""
        for key, d in self._dispatchers.items():
            d.reuse(i)
            explicit = self._explicit.get(key)
            if explicit is not None:
                self._explicit[key] = explicit[:i] + (0.0,) + explicit[i + 1:]
        self.tally.reset(i)
        self._controller_mask[i], self._vacant[i], self._over_slo[i], self._failed[i] = True, False, 0, 0
        self._abandoned[i] = 0
        self._reaped.discard(i)
        self._generation[i] += 1
        self._outliers.reset_slot(i)
        for mask in self._ready.values():
            mask[i] = True

    def _refresh_defaults(self) -> None:
        """The hint weights over the current slots, for the dispatchers that follow the defaults."""
        self._default = tuple(hint_weights(self.fleet, self._vacant))
        for key, d in self._dispatchers.items():
            d.set_weights(self._explicit.get(key, self._default))

    def _tell(self, change: EndpointChange) -> None:
        for callback in list(self._endpoint_listeners):
            try:
                callback(change)
            except Exception:  # noqa: BLE001 - a listener must not break the reconcile
                logger.exception("endpoints listener failed")

    def _apply_key(self, key: Key) -> None:
        d = self._dispatchers[key]
        for i in range(self._n):
            d.set_available(i, self._available(key[0], i))

    def _apply_all(self, i: int) -> None:
        for key, d in self._dispatchers.items():
            d.set_available(i, self._available(key[0], i))

    def _check(self, index: int) -> int:
        if not 0 <= index < self._n:
            raise IndexError(f"endpoint index {index} out of range for {self._n} endpoints")
        return index
