"""The Router: one per client; owns one ``Dispatcher`` per (model, request class) and the masks they obey.

Contract with the controller (``tritonmix.controller.start_controller(fleet, router)``)::

    router.fleet                               endpoints in index order (index i = fleet.endpoints[i])
    router.endpoint_names()                    tuple of names
    router.dispatchers()                       {(model, request_class): Dispatcher}, a snapshot; created lazily
    router.set_weights(model, rc, weights)     explicit weights of one dispatcher (kept across later changes)
    router.set_limits(model, rc, limits)       in-flight limits of one dispatcher (0 = none; the controller's)
    router.set_default_weights(weights)        for dispatchers created later and those without explicit weights
    router.set_endpoint_available(i, bool)     the controller's health / ejection mask, on every dispatcher
    router.arrivals()                          {(model, rc): user requests so far} (retries not counted)
    router.endpoint_counters()                 [(completed_ok, over_slo, failed_attempts)] per endpoint
    router.add_listener(cb)                    cb((model, rc)) after a dispatcher is created
    router.set_ejector(cb)                     cb(i, reason, now) decides ejection instead of the router (or None)

Availability of endpoint i in the dispatcher of model m is the AND of three masks:
    controller[i]      set_endpoint_available (default True)
    not ejected[i]     the client's own passive ejection after connection failures (Envoy's outlier detection:
                       eject on a failure that never reached the server, or after eject_consecutive_failures in a
                       row; eject_base_s doubling per ejection up to eject_max_s; never more than
                       max_ejected_share of the fleet at once; readmitted lazily when the time is up), used only
                       while no controller runs: ``set_ejector(cb)`` hands that decision to the controller (one
                       source of truth), and the router then only reports the failure, ``cb(i, reason, now)``
    ready[m][i]        model readiness as last probed (unknown counts as ready; a model ready nowhere keeps every
                       endpoint, so the servers' own "unknown model" error reaches the user)
Thread safety: one lock guards the masks, the dispatcher table and the rarely written counters. The hot path
takes no lock: it reads the table (a dict lookup), and the two counters every request touches, arrivals per key and
successes per endpoint, are ``itertools.count`` objects, whose ``next()`` is one C call and so atomic under the GIL
(exact, never a lost increment). A success takes the lock only when it has something to reset or to count as
over the SLO.

Hot path (what the sync clients run per request; see ``Lane``)::

    lane = router.lanes.get((model, request_class))    # None until the dispatcher exists: the full path creates it
    t0 = lane.arrive()                                 # count the arrival, retry budget, lazy readmission; one clock read
    i = lane.dispatcher.pick()  ...send...  lane.dispatcher.record(i, latency_s, ok)
    lane.succeeded(i, latency_s)                       # one clock read per completion

The sync clients write ``arrive`` and ``succeeded`` out inline (same statements, on the Lane's attributes): each
Python call they save is ~3 us per request once the tritonclient call in between has evicted the caches (measured
with the endpoint stubbed and the caches polluted between calls), against ~0.3 us when hot.
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .dispatch_core import Dispatcher
from .fleet import Fleet
from .retry import Outcome, RetryBudget

__all__ = ["Router", "Lane", "REQUEST_CLASSES", "hint_weights"]

logger = logging.getLogger(__name__)

REQUEST_CLASSES = ("interactive", "batch")
Key = Tuple[str, str]


def hint_weights(fleet: Fleet) -> List[float]:
    """Static weights from the fleet's capacity hints: max_rps when every endpoint has it, else max_concurrency
    when every endpoint has it, else equal."""
    eps = fleet.endpoints
    if all(e.max_rps for e in eps):
        return [float(e.max_rps) for e in eps]
    if all(e.max_concurrency for e in eps):
        return [float(e.max_concurrency) for e in eps]
    return [1.0] * len(eps)


def _count_value(counter: "itertools.count[int]") -> int:
    """The next value of an ``itertools.count`` started at 0, i.e. how many times ``next()`` was called on it."""
    return int(repr(counter)[6:-1])  # "count(N)"


class Lane:
    """The hot-path state of one (model, request class), made once when its dispatcher is: the dispatcher, its
    counters and what ``arrive`` / ``succeeded`` need, so that a request does no key building, lookup or locking.

    Read-only for callers: ``router``, ``dispatcher``, ``arrivals`` (itertools.count), ``budget``, ``successes`` and
    ``streaks`` (the router's per-endpoint success counters and failure streaks, shared), ``slo_s`` (the SLO for an
    interactive lane, infinity for batch: batch requests never count as over the SLO)."""

    __slots__ = ("key", "router", "dispatcher", "arrivals", "budget", "successes", "streaks", "slo_s", "_clock")

    def __init__(self, router: "Router", key: Key, dispatcher: Dispatcher,
                 arrivals: "itertools.count[int]") -> None:
        self.key = key
        self.router = router
        self.dispatcher = dispatcher
        self.arrivals = arrivals
        self.budget = router.budget
        self.successes = router._ok
        self.streaks = router._consecutive
        self.slo_s = router._slo_s if key[1] == "interactive" else math.inf
        self._clock = router._clock

    def arrive(self) -> float:
        """``Router.arrive(key, now)`` for this lane; returns ``now`` (the caller's t0: one clock read per arrival)."""
        now = self._clock()
        next(self.arrivals)
        self.budget.record_request()
        if now >= self.router._next_readmit_at:
            self.router._readmit(now)
        return now

    def succeeded(self, i: int, latency_s: float) -> None:
        """``Router.succeeded(i, latency_s, request_class)`` for this lane."""
        next(self.successes[i])
        if self.streaks[i] or latency_s > self.slo_s:
            self.router.note_success(i, latency_s, self.key[1])


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
        self._ejected_until = [0.0] * n
        self._ejections = [0] * n
        self._consecutive = [0] * n
        self._next_readmit_at = math.inf
        self._arrivals: Dict[Key, "itertools.count[int]"] = {}
        self._lanes: Dict[Key, Lane] = {}
        self._ok = [itertools.count() for _ in range(n)]
        self._over_slo = [0] * n
        self._failed = [0] * n
        self._listeners: List[Callable[[Key], None]] = []
        self._ejector: Optional[Callable[[int, str, float], None]] = None
        s = fleet.controller
        self.budget = RetryBudget(s.retry_budget_share, clock=clock)
        self._slo_s = fleet.slo_s

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
            return {key: _count_value(c) for key, c in self._arrivals.items()}

    def endpoint_counters(self) -> List[Tuple[int, int, int]]:
        with self._lock:
            return list(zip(map(_count_value, self._ok), self._over_slo, self._failed))

    def add_listener(self, callback: Callable[[Key], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def set_ejector(self, ejector: Optional[Callable[[int, str, float], None]]) -> None:
        """Hand ejection to ``ejector(i, reason, now)`` (called outside the lock on each failure that would eject);
        the router's own ejection is off while one is set. None: the router's own again."""
        with self._lock:
            self._ejector = ejector

    # ---- hot path ------------------------------------------------------------------------------------------

    @property
    def lanes(self) -> Dict[Key, Lane]:
        """{(model, request_class): Lane}, the live table (read it, never write it): a key appears once its
        dispatcher exists and the listeners (the first readiness probe) have run."""
        return self._lanes

    def dispatcher(self, model: str, request_class: str = "interactive") -> Dispatcher:
        """The dispatcher of (model, request_class), created on first use (listeners are told then)."""
        d = self._dispatchers.get((model, request_class))
        return d if d is not None else self._create((model, request_class))

    def arrive(self, key: Key, now: float) -> None:
        """Count one user request of ``key``; readmit ejected endpoints whose time is up."""
        counter = self._arrivals.get(key)
        if counter is None:
            with self._lock:
                counter = self._arrivals.setdefault(key, itertools.count())
        next(counter)
        self.budget.record_request()
        if now >= self._next_readmit_at:
            self._readmit(now)

    def succeeded(self, i: int, latency_s: float, request_class: str) -> None:
        """Count a success; the lock only when a failure streak is to be reset or the SLO was missed."""
        next(self._ok[i])
        if self._consecutive[i] or (latency_s > self._slo_s and request_class == "interactive"):
            self.note_success(i, latency_s, request_class)

    def note_success(self, i: int, latency_s: float, request_class: str) -> None:
        """The locked half of ``succeeded`` (the success itself already counted): end the failure streak of i and
        count an SLO miss of an interactive request."""
        with self._lock:
            self._consecutive[i] = 0
            if latency_s > self._slo_s and request_class == "interactive":
                self._over_slo[i] += 1

    def failed(self, i: int, outcome: Outcome, now: float) -> None:
        """Count a failed attempt; eject the endpoint after a connection failure (see the module docstring)."""
        with self._lock:
            self._failed[i] += 1
            if outcome is Outcome.REQUEST:
                self._consecutive[i] = 0
                return
            self._consecutive[i] += 1
            limit = max(1, self.fleet.controller.eject_consecutive_failures)
            if outcome is not Outcome.NOT_SENT and self._consecutive[i] < limit:
                return
            ejector = self._ejector
            if ejector is None:
                self._eject(i, now)
                return
            reason = "connection failure" if outcome is Outcome.NOT_SENT else "consecutive failures"
        ejector(i, reason, now)

    # ---- readiness and ejection ------------------------------------------------------------------------------

    def set_model_ready(self, model: str, ready: Sequence[Optional[bool]]) -> None:
        """Readiness of ``model`` per endpoint (None: unknown, counts as ready). Ready nowhere: every endpoint."""
        mask = [r is not False for r in ready]
        if not any(mask):
            mask = [True] * self._n
        with self._lock:
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
            return [t > 0.0 or not c for t, c in zip(self._ejected_until, self._controller_mask)]

    def is_available(self, model: str, i: int) -> bool:
        """Whether endpoint ``i`` may take requests for ``model`` now (all three masks)."""
        with self._lock:
            return self._available(model, i)

    def _eject(self, i: int, now: float) -> None:
        if self._ejected_until[i] > 0.0:
            return
        cap = int(self.fleet.controller.max_ejected_share * self._n)
        if sum(1 for t in self._ejected_until if t > 0.0) >= cap:
            return
        s = self.fleet.controller
        duration_s = min(s.eject_max_s, s.eject_base_s * (2 ** self._ejections[i]))
        self._ejections[i] += 1
        self._ejected_until[i] = now + duration_s
        self._next_readmit_at = min(self._next_readmit_at, now + duration_s)
        self._apply_all(i)
        logger.warning("endpoint %s ejected for %.1f s after a connection failure", self._names[i], duration_s)

    def _readmit(self, now: float) -> None:
        with self._lock:
            upcoming = math.inf
            for i, until in enumerate(self._ejected_until):
                if 0.0 < until <= now:
                    self._ejected_until[i] = 0.0
                    self._consecutive[i] = 0
                    self._apply_all(i)
                    logger.info("endpoint %s readmitted", self._names[i])
                elif until > now:
                    upcoming = min(upcoming, until)
            self._next_readmit_at = upcoming

    # ---- internals (lock held) -----------------------------------------------------------------------------

    def _create(self, key: Key) -> Dispatcher:
        with self._lock:
            d = self._dispatchers.get(key)
            if d is not None:
                return d
            seed = None if self._seed is None else self._seed ^ zlib.crc32("\0".join(key).encode())
            d = Dispatcher(self._n, seed=seed)
            d.set_weights(self._explicit.get(key, self._default))
            self._dispatchers[key] = d
            self._apply_key(key)
            arrivals = self._arrivals.setdefault(key, itertools.count())
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(key)
            except Exception:  # noqa: BLE001 - a listener must not break a request
                logger.exception("dispatcher listener failed for %s", key)
        with self._lock:
            self._lanes[key] = Lane(self, key, d, arrivals)
        return d

    def _available(self, model: str, i: int) -> bool:
        ready = self._ready.get(model)
        return (self._controller_mask[i] and self._ejected_until[i] == 0.0
                and (ready is None or ready[i]))

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
