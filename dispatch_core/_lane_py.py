"""The pure-Python twin of the compiled lane types (``SlidingCount``, ``EndpointTally``, ``Lane`` in
``_dispatch_c.pyx``): the rules are stated there; this file gives the same counts and the same calls."""
from __future__ import annotations

import math
import operator
import threading
from typing import Any, Callable, Iterable, Optional, Tuple, Union

from ._dispatch_py import Dispatcher

__all__ = ["SlidingCount", "EndpointTally", "Lane"]


class SlidingCount:
    """Events over a sliding window of two half-windows (``_dispatch_c.SlidingCount``); a lock per call."""

    def __init__(self, window_s: float, now: float) -> None:
        window_s = float(window_s)
        if not (window_s > 0.0 and window_s != math.inf):
            raise ValueError(f"window_s must be finite and > 0, got {window_s!r}")
        self._half_s = window_s / 2.0
        self._epoch = math.floor(now / self._half_s)
        self._previous = 0
        self._current = 0
        self._lock = threading.Lock()

    def _rotate(self, now: float) -> None:
        epoch = math.floor(now / self._half_s)
        if epoch != self._epoch:
            self._previous = self._current if epoch == self._epoch + 1 else 0
            self._current = 0
            self._epoch = epoch

    def add(self, now: float) -> None:
        with self._lock:
            self._rotate(now)
            self._current += 1

    def total(self, now: float) -> int:
        with self._lock:
            self._rotate(now)
            return self._previous + self._current


class EndpointTally:
    """Successes and failure streaks per endpoint, and ``readmit_at`` (``_dispatch_c.EndpointTally``)."""

    def __init__(self, n_endpoints: int) -> None:
        n = operator.index(n_endpoints)
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        self._ok = [0] * n
        self._streak = [0] * n
        self.readmit_at = math.inf
        self.lock = threading.Lock()  # the twin's counts are ints under a lock; the compiled ones rely on the GIL

    @property
    def n_endpoints(self) -> int:
        return len(self._ok)

    def successes(self) -> Tuple[int, ...]:
        with self.lock:
            return tuple(self._ok)

    def streak(self, i: int) -> int:
        return self._streak[self._check(i)]

    def set_streak(self, i: int, value: int) -> None:
        self._streak[self._check(i)] = int(value)

    def resize(self, n_endpoints: int) -> None:
        """Grow to n endpoints (new ones: zero counts); never shrinks (``_dispatch_c.EndpointTally.resize``)."""
        n = operator.index(n_endpoints)
        with self.lock:
            if n < len(self._ok):
                raise ValueError(f"an EndpointTally only grows: {n} < {len(self._ok)} endpoints")
            k = n - len(self._ok)
            self._ok.extend([0] * k)
            self._streak.extend([0] * k)

    def reset(self, i: int) -> None:
        """Slot i taken by a new endpoint: zero successes, no streak."""
        with self.lock:
            i = self._check(i)
            self._ok[i] = 0
            self._streak[i] = 0

    def _check(self, i: int) -> int:
        if not 0 <= i < len(self._ok):
            raise IndexError(f"endpoint index {i} out of range for {len(self._ok)} endpoints")
        return i


class Lane:
    """begin / pick / succeeded / failed around one dispatcher (``_dispatch_c.Lane``)."""

    def __init__(self, dispatcher: Dispatcher, tally: EndpointTally, requests: SlidingCount,
                 clock: Callable[[], float], slo_s: float, on_due: Callable[[float], Any],
                 on_slow: Callable[[int, float], Any], on_failed: Callable[[int, Any, float], Any]) -> None:
        if dispatcher is None or tally is None or requests is None:
            raise TypeError("dispatcher, tally and requests are required")
        if tally.n_endpoints != dispatcher.n_endpoints:
            raise ValueError(f"tally has {tally.n_endpoints} endpoints, the dispatcher {dispatcher.n_endpoints}")
        self.dispatcher = dispatcher
        self.tally = tally
        self.requests = requests
        self.slo_s = float(slo_s)
        self._clock = clock
        self._on_due = on_due
        self._on_slow = on_slow
        self._on_failed = on_failed
        self._arrivals = 0
        self._lock = tally.lock

    @property
    def arrivals(self) -> int:
        return self._arrivals

    def begin(self) -> float:
        now = float(self._clock())
        with self._lock:
            self._arrivals += 1
        self.requests.add(now)
        if now >= self.tally.readmit_at:
            self._on_due(now)
        return now

    def pick(self, exclude: Union[None, int, Iterable[int]] = None) -> int:
        return self.dispatcher.pick(exclude)

    def succeeded(self, i: int, t0: float) -> float:
        latency_s = self._clock() - t0
        self.dispatcher.record(i, latency_s, True)
        tally = self.tally
        with self._lock:
            tally._ok[i] += 1
        if tally._streak[i] or latency_s > self.slo_s:
            self._on_slow(i, latency_s)
        return latency_s

    def failed(self, i: int, t0: float, outcome: Optional[Any] = None) -> float:
        now = float(self._clock())
        self.dispatcher.record(i, max(0.0, now - t0), False)
        if outcome is not None:
            self._on_failed(i, outcome, now)
        return now
