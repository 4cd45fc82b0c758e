"""The simpler policies tritonmix is compared with, each behind plain tritonclient clients.

Every baseline gets the same modest resilience a plain load balancer has: a request whose attempt never reached a
server (connection refused/reset, 503, timeout before a response) is sent once more to another endpoint. None of
them reads health, latency or price.

- ``RoundRobin``: endpoint k mod n for the k-th request. O(1).
- ``LeastOutstandingP2C``: draw two distinct endpoints uniformly, keep the one with fewer requests in flight
  (Mitzenmacher's power of two choices). O(1).
- ``StaticWeights``: draw an endpoint with fixed probabilities (the paper's hand-set weights). O(n).
"""
from __future__ import annotations

import itertools
import random
import threading
from typing import Dict, List, Optional, Protocol, Sequence, Set

__all__ = ["Picker", "RoundRobin", "LeastOutstandingP2C", "StaticWeights", "PAPER_STATIC_WEIGHTS"]

#: As published with the paper's companion repository (aws-samples/scalable-hw-agnostic-inference).
PAPER_STATIC_WEIGHTS: Dict[str, float] = {
    "inf2": 40.0,
    "trn1": 20.0,
    "g5-triton": 15.0,
    "g5-cuda": 15.0,
    "g6-triton": 10.0,
}


class Picker(Protocol):
    """Chooses an endpoint index for a request; ``done`` is called once per ``pick``."""

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
