"""The pure-Python reference twin of the compiled dispatcher (``_dispatch_c.pyx``).

This file is the reference: the Cython build must give the same picks for the same seed and the same operation
sequence (tests/test_dispatch_core.py checks it with hypothesis). Any change to the rule here is made there too.

Endpoints that leave from anywhere: stable slots, not compaction. An endpoint's index is its slot for as long as a
request picked there may still be out, because the request holds the bare index until it calls ``record(i, ...)``
(the lanes, the engine's retries, the hedger all do): compaction would have to find and rewrite every one of
those, and a record that raced a renumbering would land on the wrong endpoint. So ``remove(i)`` only marks slot i
(never picked, outside the two-choice draw, the limits' overflow and the cumulative total; its counters stay and
its in-flight records still land), and ``reuse(i)`` hands a removed slot with nothing in flight to a newcomer with
fresh state. The cost of a removed slot is one entry in the cumulative array (a zero-width step the bisection never
lands on); the caller (the router) reuses slots first, so the array stays about as long as the largest set seen.
"""
from __future__ import annotations

import bisect
import math
import operator
import threading
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from ._common import (
    EXCLUDE_RETRIES,
    MASK64,
    SPLITMIX_GAMMA,
    DispatchStats,
    NoEndpointAvailable,
    UnmatchedRecord,
    initial_state,
)

__all__ = ["Dispatcher", "noop"]

_TWO_POW_MINUS_53 = 2.0**-53
Exclude = Union[None, int, Iterable[int]]


def noop() -> None:
    """Does nothing: the floor for call-overhead benchmarks."""


class Dispatcher:
    """Weighted, load-aware choice of an endpoint; the twin of the compiled ``_dispatch_c.Dispatcher``.

    Pick rule (weighted two choices, load-normalised):
        draw two candidates a, b independently with probability weight_i / sum(eligible weights), each by
        bisection over the cumulative effective weights (effective weight = weight if available else 0);
        keep b only when in_flight_b * weight_a < in_flight_a * weight_b (b carries less load per unit of
        share), otherwise a. Idle endpoints tie, so the first draw wins and picks follow the weight shares
        exactly; an endpoint with more requests in flight than its share loses the comparison.
        Cost: O(log n) per pick, O(1) per record, O(n) per set_weights / set_available / resize / remove /
        reuse (they rebuild the cumulative array).
    Churn (module docstring): ``remove(i)`` takes slot i out of every rule above (effective weight 0 whatever its
        weight and availability, never an overflow or scan target), keeps its counters, and lets the records of its
        requests still out land; ``reuse(i)`` gives a removed slot with none in flight fresh state (weight 0,
        available, no limit, no external load, zero counters) for a new endpoint.
    Limits (``set_limits``, 0 = none): when the chosen endpoint has ``limit`` or more requests in flight, the
        other candidate is taken if it is under its limit or has none, else one draw by weight over the eligible,
        not excluded endpoints that have a limit and are under it (one linear scan, O(n)); when there is none the
        choice stands (the request queues where the weights say). An endpoint without a limit takes overflow only
        as a weighted candidate: the controller gives none to endpoints it cannot vouch for (unknown or too slow
        service time, on probation), and their small trial weight must not turn into all the overflow. The controller sets a limit at the depth past which a new
        request would wait beyond the SLO, so a queue that grew between two ticks overflows at once.
    External load (``set_external``, 0 = none): other clients' requests in flight at each endpoint, as a control
        plane tells its followers. They count beside this dispatcher's own in the load comparison and against the
        limits: load_i = in_flight_i + external_i replaces in_flight_i in both rules above, so that the clients of
        one plane share an endpoint's limit instead of each filling it.
    Exclusion: each candidate is redrawn up to EXCLUDE_RETRIES times while it is in ``exclude``; after that
        it is drawn by one linear scan over the endpoints that are eligible and not excluded (O(n)).
        Indexes in ``exclude`` outside [0, n_endpoints) are ignored (such an endpoint cannot be picked).
    Record (EWMA with alpha = ewma_alpha):
        error_rate     <- alpha * (0 if ok else 1) + (1 - alpha) * error_rate          (starts at 0.0)
        ewma_latency_s <- alpha * latency_s + (1 - alpha) * ewma_latency_s              (successes only;
                          the first success sets it; NaN before that: a fast failure must not look fast)
    PRNG: splitmix64 (state += 0x9E3779B97F4A7C15, then the usual xor-shift-multiply mix); a draw in [0, 1)
        is (x >> 11) * 2**-53. ``seed=None`` seeds from os.urandom.
    Thread safety: every public method holds one ``threading.Lock`` for its whole body.
    """

    def __init__(self, n_endpoints: int, *, seed: Optional[int] = None, ewma_alpha: float = 0.2) -> None:
        n = operator.index(n_endpoints)
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        alpha = float(ewma_alpha)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha!r}")
        self._lock = threading.Lock()
        self._state = initial_state(seed)
        self._alpha = alpha
        self._n = 0
        self._w: List[float] = []
        self._avail: List[bool] = []
        self._removed: List[bool] = []
        self._in_flight: List[int] = []
        self._limit: List[int] = []
        self._external: List[int] = []
        self._picks: List[int] = []
        self._successes: List[int] = []
        self._failures: List[int] = []
        self._ewma_latency_s: List[float] = []
        self._error_rate: List[float] = []
        self._cum: List[float] = []
        self._total = 0.0
        self._last = -1
        self._grow(n)
        self._rebuild()

    # ---- configuration -------------------------------------------------------------------------------------

    @property
    def n_endpoints(self) -> int:
        return self._n

    @property
    def ewma_alpha(self) -> float:
        return self._alpha

    def set_weights(self, weights: Sequence[float]) -> None:
        """Desired traffic shares (non-negative, finite; 0 = no traffic). ValueError names a bad index."""
        values = [float(w) for w in weights]
        if len(values) != self._n:
            raise ValueError(f"weights has length {len(values)}, expected {self._n}")
        for i, w in enumerate(values):
            if w != w or w in (math.inf, -math.inf) or w < 0.0:
                raise ValueError(f"weights[{i}] = {w!r}: must be finite and >= 0")
        with self._lock:
            self._w = values
            self._rebuild()

    def set_limits(self, limits: Sequence[int]) -> None:
        """In-flight limits per endpoint (ints >= 0; 0 = no limit), see the class docstring. ValueError names a bad
        index."""
        values = [operator.index(x) for x in limits]
        if len(values) != self._n:
            raise ValueError(f"limits has length {len(values)}, expected {self._n}")
        for k, v in enumerate(values):
            if v < 0:
                raise ValueError(f"limits[{k}] = {v!r}: must be >= 0")
        with self._lock:
            self._limit = values

    def limits(self) -> Tuple[int, ...]:
        """The in-flight limits (0: none)."""
        return tuple(self._limit)

    def set_external(self, values: Sequence[int]) -> None:
        """Other clients' requests in flight per endpoint (ints >= 0), see the class docstring. ValueError names a
        bad index."""
        external = [operator.index(x) for x in values]
        if len(external) != self._n:
            raise ValueError(f"external has length {len(external)}, expected {self._n}")
        for k, v in enumerate(external):
            if v < 0:
                raise ValueError(f"external[{k}] = {v!r}: must be >= 0")
        with self._lock:
            self._external = external

    def external(self) -> Tuple[int, ...]:
        """Other clients' requests in flight per endpoint, as last set (0: none)."""
        return tuple(self._external)

    def set_available(self, i: int, available: bool) -> None:
        """Health mask: an unavailable endpoint is never picked (its weight is kept)."""
        with self._lock:
            i = self._check_index(i)
            self._avail[i] = bool(available)
            self._rebuild()

    def resize(self, n_endpoints: int) -> None:
        """Keep endpoints [0, min(old, new)) with all their state; new ones get weight 0, available, zero counters.
        Dropping an endpoint with requests in flight raises ValueError (drain it first: weight 0, then wait)."""
        n = operator.index(n_endpoints)
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        with self._lock:
            for i in range(n, self._n):
                if self._in_flight[i]:
                    raise ValueError(f"endpoint {i} has {self._in_flight[i]} requests in flight; cannot drop it")
            if n < self._n:
                for col in self._columns():
                    del col[n:]
                self._n = n
            else:
                self._grow(n - self._n)
            self._rebuild()

    def remove(self, i: int) -> None:
        """Endpoint i left: never picked again; the records of its requests in flight still land (class
        docstring). Removing a removed slot changes nothing."""
        with self._lock:
            i = self._check_index(i)
            self._removed[i] = True
            self._rebuild()

    def reuse(self, i: int) -> None:
        """Slot i, removed and with nothing in flight, for a new endpoint: weight 0, available, no limit, no
        external load, zero counters, NaN latency. ValueError when it is not removed or has requests in flight."""
        with self._lock:
            i = self._check_index(i)
            if not self._removed[i]:
                raise ValueError(f"endpoint {i} is not removed; only a removed slot can be reused")
            if self._in_flight[i]:
                raise ValueError(f"endpoint {i} has {self._in_flight[i]} requests in flight; cannot reuse it")
            for col, fresh in zip(self._columns(), _FRESH):
                col[i] = fresh
            self._rebuild()

    def is_removed(self, i: int) -> bool:
        with self._lock:
            return self._removed[self._check_index(i)]

    def removed(self) -> Tuple[bool, ...]:
        """Per slot: removed (``remove``) and not reused since."""
        with self._lock:
            return tuple(self._removed)

    # ---- hot path --------------------------------------------------------------------------------------------

    def pick(self, exclude: Exclude = None) -> int:
        """Choose an endpoint (see the class docstring) and count it in flight. Raises NoEndpointAvailable."""
        excluded = None if exclude is None else _exclude_set(exclude)
        with self._lock:
            if self._total <= 0.0:
                raise NoEndpointAvailable("no available endpoint with weight > 0")
            if excluded is None:
                a = self._draw()
                b = self._draw()
            else:
                a = self._draw_excluding(excluded)
                if a < 0:
                    raise NoEndpointAvailable("every available endpoint with weight > 0 is excluded")
                b = self._draw_excluding(excluded)
            w = self._w
            fl = self._in_flight
            ext = self._external
            if (fl[b] + ext[b]) * w[a] < (fl[a] + ext[a]) * w[b]:
                a, b = b, a
            lim = self._limit
            if lim[a] and fl[a] + ext[a] >= lim[a]:
                if lim[b] == 0 or fl[b] + ext[b] < lim[b]:
                    a = b
                else:
                    o = self._draw_open(excluded or frozenset())
                    if o >= 0:
                        a = o
            fl[a] += 1
            self._picks[a] += 1
            return a

    def take(self, i: int) -> int:
        """Count a pick of endpoint ``i`` that the caller chose itself, whatever its weight and health mask (a
        request's last resort, ``tritonmix.request.attempts``): in flight and picks += 1, matched by one ``record``
        as any pick is. NoEndpointAvailable when the endpoint was removed."""
        with self._lock:
            i = self._check_index(i)
            if self._removed[i]:
                raise NoEndpointAvailable(f"endpoint {i} was removed")
            self._in_flight[i] += 1
            self._picks[i] += 1
            return i

    def record(self, i: int, latency_s: float, ok: bool) -> None:
        """The one completion of a pick of ``i``: in_flight -= 1, counters and EWMAs updated (class docstring)."""
        latency_s = float(latency_s)
        with self._lock:
            i = self._check_index(i)
            if not (latency_s >= 0.0 and latency_s != math.inf):
                raise ValueError(f"latency_s = {latency_s!r} for endpoint {i}: must be finite and >= 0")
            if self._in_flight[i] <= 0:
                raise UnmatchedRecord(f"record({i}) without a pick of endpoint {i} in flight")
            self._in_flight[i] -= 1
            alpha = self._alpha
            if ok:
                if self._successes[i] == 0:
                    self._ewma_latency_s[i] = latency_s
                else:
                    self._ewma_latency_s[i] = alpha * latency_s + (1.0 - alpha) * self._ewma_latency_s[i]
                self._successes[i] += 1
                self._error_rate[i] = (1.0 - alpha) * self._error_rate[i]
            else:
                self._failures[i] += 1
                self._error_rate[i] = alpha + (1.0 - alpha) * self._error_rate[i]

    # ---- reading -------------------------------------------------------------------------------------------

    def stats(self) -> DispatchStats:
        """Per-endpoint counters, columnar (one tuple per field); O(n)."""
        with self._lock:
            return DispatchStats(
                tuple(self._in_flight),
                tuple(self._picks),
                tuple(self._successes),
                tuple(self._failures),
                tuple(self._ewma_latency_s),
                tuple(self._error_rate),
            )

    def weights(self) -> Tuple[float, ...]:
        with self._lock:
            return tuple(self._w)

    def is_available(self, i: int) -> bool:
        with self._lock:
            return self._avail[self._check_index(i)]

    def in_flight(self, i: int) -> int:
        with self._lock:
            return self._in_flight[self._check_index(i)]

    def __repr__(self) -> str:
        return f"<Dispatcher (python) n_endpoints={self._n} in_flight={sum(self._in_flight)}>"

    # ---- internals (call with the lock held) ---------------------------------------------------------------

    def _columns(self) -> Tuple[list, ...]:
        return (self._w, self._avail, self._removed, self._in_flight, self._limit, self._external, self._picks,
                self._successes, self._failures, self._ewma_latency_s, self._error_rate)

    def _grow(self, k: int) -> None:
        self._w.extend([0.0] * k)
        self._avail.extend([True] * k)
        self._removed.extend([False] * k)
        for col in (self._in_flight, self._limit, self._external, self._picks, self._successes, self._failures):
            col.extend([0] * k)
        self._ewma_latency_s.extend([math.nan] * k)
        self._error_rate.extend([0.0] * k)
        self._n += k

    def _check_index(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self._n:
            raise IndexError(f"endpoint index {i} out of range for {self._n} endpoints")
        return i

    def _rebuild(self) -> None:
        """Cumulative effective weights, summed left to right (the compiled build sums in the same order)."""
        cum = []
        acc = 0.0
        last = -1
        for i in range(self._n):
            if self._avail[i] and self._w[i] > 0.0 and not self._removed[i]:
                acc += self._w[i]
                last = i
            cum.append(acc)
        self._cum = cum
        self._total = acc
        self._last = last

    def _next_double(self) -> float:
        """splitmix64 step, as a double in [0, 1)."""
        s = (self._state + SPLITMIX_GAMMA) & MASK64
        self._state = s
        z = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        return (z >> 11) * _TWO_POW_MINUS_53

    def _draw(self) -> int:
        """First index whose cumulative weight exceeds u * total; rounding past the end takes the last eligible."""
        i = bisect.bisect_right(self._cum, self._next_double() * self._total)
        return i if i < self._n else self._last

    def _draw_open(self, excluded: frozenset) -> int:
        """A draw by weight over the eligible, not excluded endpoints with a limit and under it; -1 if none."""
        fl, lim, ext = self._in_flight, self._limit, self._external
        return self._draw_among([i for i in range(self._n) if i not in excluded and self._eligible(i)
                                 and 0 < lim[i] and fl[i] + ext[i] < lim[i]])

    def _draw_excluding(self, excluded: frozenset) -> int:
        """A draw by weight that is not in ``excluded``, or -1 when every eligible endpoint is excluded."""
        for _ in range(EXCLUDE_RETRIES):
            i = self._draw()
            if i not in excluded:
                return i
        return self._draw_among([i for i in range(self._n) if i not in excluded and self._eligible(i)])

    def _eligible(self, i: int) -> bool:
        return self._avail[i] and self._w[i] > 0.0 and not self._removed[i]

    def _draw_among(self, members: List[int]) -> int:
        """One draw by weight over ``members`` (ascending; weights summed left to right as the compiled build
        does), or -1 without drawing when their total weight is 0."""
        rest = 0.0
        for i in members:
            rest += self._w[i]
        if rest <= 0.0:
            return -1
        u = self._next_double() * rest
        acc = 0.0
        last = -1
        for i in members:
            acc += self._w[i]
            last = i
            if acc > u:
                return i
        return last


#: a reused slot's values, in ``_columns`` order
_FRESH = (0.0, True, False, 0, 0, 0, 0, 0, 0, math.nan, 0.0)


def _exclude_set(exclude: Exclude) -> frozenset:
    """``exclude`` as a set of ints: one index, or any iterable of indexes."""
    if isinstance(exclude, int):
        return frozenset((operator.index(exclude),))
    return frozenset(operator.index(x) for x in exclude)
