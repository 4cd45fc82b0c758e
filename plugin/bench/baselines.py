"""The simpler policies tritonmix is compared with, each behind plain tritonclient clients.

Every baseline gets the same modest resilience a plain load balancer has: a request whose attempt never reached a
server (connection refused/reset, 503, timeout before a response) is sent once more to another endpoint. None of
them reads health, latency or price.

- ``RoundRobin``: endpoint k mod n for the k-th request. O(1).
- ``LeastOutstandingP2C``: draw two distinct endpoints uniformly, keep the one with fewer requests in flight
  (Mitzenmacher's power of two choices). O(1).
- ``StaticWeights``: draw an endpoint with fixed probabilities (the paper's hand-set weights). O(n).

The baselines a practitioner would configure against tritonmix, each given the fleet file's facts (prices, slots
C_i, capacity hints max_rps_i, hence the service time s_i = C_i / max_rps_i) and nothing live but its own
requests in flight and, for peak EWMA, their latencies (``observe``):

- ``CheapestFirstSpill``: the endpoints that can answer within the SLO (s_i <= SLO), cheapest per request first
  (price_i x s_i / C_i), each capped at C_i requests in flight (Envoy priorities with a circuit breaker at C_i, or
  an ALB target group per pool with a concurrency limit); a request goes to the cheapest endpoint under its cap,
  and when every one is full, to the one with the fewest in flight per slot. O(n).
- ``WeightedLeastRequest``: Envoy's weighted least request with weights from capacity (max_rps_i): the endpoint
  with the largest w_i / (in_flight_i + 1) (active_request_bias 1), ties at random. O(n).
- ``PeakEwmaP2C``: two endpoints drawn at random, the one with the lower cost = peak_ewma_i x (in_flight_i + 1)
  (Finagle's and Linkerd's rule): peak_ewma_i jumps to a latency above it at once and decays toward lower ones with
  time constant ``tau_s`` (w = exp(-dt / tau)); an endpoint not measured yet costs the smallest known peak, so it
  gets tried. O(1).
- ``slo_capable(names, fleet)``: the endpoints with s_i <= SLO, for round-robin and P2C over them only (the CPU
  pool answers in 5 s against a 0.6 s SLO: no practitioner sends interactive work there).
"""
from __future__ import annotations

import itertools
import math
import random
import threading
import time
from typing import Any, Dict, List, Optional, Protocol, Sequence, Set

__all__ = ["Picker", "RoundRobin", "LeastOutstandingP2C", "StaticWeights", "PAPER_STATIC_WEIGHTS",
           "CheapestFirstSpill", "WeightedLeastRequest", "PeakEwmaP2C", "Restricted", "service_times",
           "slo_capable"]

#: As published with the paper's companion repository (aws-samples/scalable-hw-agnostic-inference).
PAPER_STATIC_WEIGHTS: Dict[str, float] = {
    "inf2": 40.0,
    "trn1": 20.0,
    "g5-triton": 15.0,
    "g5-cuda": 15.0,
    "g6-triton": 10.0,
}


class Picker(Protocol):
    """Chooses an endpoint index for a request; ``done`` is called once per ``pick``; a picker that learns from
    latencies also has ``observe(index, latency_s)`` (called after each successful attempt)."""

    def pick(self, exclude: Set[int]) -> int: ...

    def done(self, index: int) -> None: ...


class _Outstanding:
    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.lock = threading.Lock()

    def done(self, index: int) -> None:
        with self.lock:
            self.counts[index] -= 1


class RoundRobin(_Outstanding):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._next = itertools.count()

    def pick(self, exclude: Set[int]) -> int:
        n = len(self.counts)
        for _ in range(n):
            index = next(self._next) % n
            if index not in exclude:
                with self.lock:
                    self.counts[index] += 1
                return index
        raise LookupError("every endpoint is excluded")


class LeastOutstandingP2C(_Outstanding):
    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(n)
        self._rng = random.Random(seed)

    def pick(self, exclude: Set[int]) -> int:
        candidates = [i for i in range(len(self.counts)) if i not in exclude]
        if not candidates:
            raise LookupError("every endpoint is excluded")
        with self.lock:
            pair = self._rng.sample(candidates, min(2, len(candidates)))
            index = min(pair, key=lambda i: self.counts[i])
            self.counts[index] += 1
        return index


class StaticWeights(_Outstanding):
    def __init__(self, weights: Sequence[float], seed: int = 0) -> None:
        super().__init__(len(weights))
        self._weights = list(weights)
        self._rng = random.Random(seed)

    def pick(self, exclude: Set[int]) -> int:
        weights = [0.0 if i in exclude else w for i, w in enumerate(self._weights)]
        if sum(weights) <= 0:
            raise LookupError("every endpoint with weight is excluded")
        with self.lock:
            index = self._rng.choices(range(len(weights)), weights=weights)[0]
            self.counts[index] += 1
        return index


def static_weights_for(names: Sequence[str], table: Optional[Dict[str, float]] = None) -> List[float]:
    """The paper's weights by endpoint name; endpoints it does not name (the CPU pool) get 0."""
    table = PAPER_STATIC_WEIGHTS if table is None else table
    return [table.get(name, 0.0) for name in names]


def service_times(fleet: Any) -> List[float]:
    """s_i = C_i / max_rps_i from the fleet file's hints (inf where the hints are missing)."""
    return [(e.max_concurrency or 1) / e.max_rps if e.max_rps else math.inf for e in fleet.endpoints]


def slo_capable(fleet: Any) -> List[int]:
    """The endpoints whose service time alone fits the SLO (all of them when none does)."""
    capable = [i for i, s_i in enumerate(service_times(fleet)) if s_i <= fleet.slo_s]
    return capable or list(range(len(fleet.endpoints)))


class Restricted:
    """Another picker over a subset of the endpoints (``slo_capable``): indexes are translated both ways."""

    def __init__(self, members: Sequence[int], inner: Any) -> None:
        self._members = list(members)
        self._inner = inner

    def pick(self, exclude: Set[int]) -> int:
        inner_exclude = {k for k, i in enumerate(self._members) if i in exclude}
        return self._members[self._inner.pick(inner_exclude)]

    def done(self, index: int) -> None:
        self._inner.done(self._members.index(index))

    def observe(self, index: int, latency_s: float) -> None:
        observe = getattr(self._inner, "observe", None)
        if observe is not None:
            observe(self._members.index(index), latency_s)


class CheapestFirstSpill(_Outstanding):
    def __init__(self, fleet: Any) -> None:
        super().__init__(len(fleet.endpoints))
        s = service_times(fleet)
        self._caps = [int(e.max_concurrency or 1) for e in fleet.endpoints]
        cost = [e.price_per_hour * s[i] / self._caps[i] for i, e in enumerate(fleet.endpoints)]
        self._order = sorted(slo_capable(fleet), key=lambda i: (cost[i], i))

    def pick(self, exclude: Set[int]) -> int:
        allowed = [i for i in self._order if i not in exclude]
        if not allowed:
            raise LookupError("every SLO-capable endpoint is excluded")
        with self.lock:
            counts = self.counts
            index = next((i for i in allowed if counts[i] < self._caps[i]), None)
            if index is None:
                index = min(allowed, key=lambda i: counts[i] / self._caps[i])
            counts[index] += 1
        return index


class WeightedLeastRequest(_Outstanding):
    def __init__(self, fleet: Any, seed: int = 0) -> None:
        super().__init__(len(fleet.endpoints))
        self._weights = [float(e.max_rps or e.max_concurrency or 1.0) for e in fleet.endpoints]
        self._rng = random.Random(seed)

    def pick(self, exclude: Set[int]) -> int:
        with self.lock:
            scored = [(self._weights[i] / (self.counts[i] + 1), self._rng.random(), i)
                      for i in range(len(self.counts)) if i not in exclude]
            if not scored:
                raise LookupError("every endpoint is excluded")
            index = max(scored)[2]
            self.counts[index] += 1
        return index


class PeakEwmaP2C(_Outstanding):
    def __init__(self, n: int, tau_s: float = 10.0, seed: int = 0, clock: Any = time.monotonic) -> None:
        super().__init__(n)
        self._tau_s = tau_s
        self._peak = [math.nan] * n
        self._at = [0.0] * n
        self._rng = random.Random(seed)
        self._clock = clock

    def observe(self, index: int, latency_s: float) -> None:
        now = self._clock()
        with self.lock:
            old = self._peak[index]
            if not old == old or latency_s > old:
                self._peak[index] = latency_s
            else:
                w = math.exp(-(now - self._at[index]) / self._tau_s)
                self._peak[index] = old * w + latency_s * (1.0 - w)
            self._at[index] = now

    def pick(self, exclude: Set[int]) -> int:
        candidates = [i for i in range(len(self.counts)) if i not in exclude]
        if not candidates:
            raise LookupError("every endpoint is excluded")
        with self.lock:
            known = [p for p in self._peak if p == p]
            floor = min(known) if known else 1.0
            pair = self._rng.sample(candidates, min(2, len(candidates)))
            index = min(pair, key=lambda i: (self._peak[i] if self._peak[i] == self._peak[i] else floor)
                        * (self.counts[i] + 1))
            self.counts[index] += 1
        return index
