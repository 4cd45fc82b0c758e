"""Open-loop arrivals and capacity events: the same trace is replayed for every policy.

Arrivals are a non-homogeneous Poisson process whose rate follows a cosine wave, as the paper's load generator did::

    rate(t) = base_rps + (peak_rps - base_rps) * (1 - cos(2 pi t / period_s)) / 2

drawn by thinning (Lewis & Shedler): candidates at the peak rate, each kept with probability rate(t) / peak_rps.
Cost O(peak_rps x duration_s). Seeded, so every policy sees exactly the same arrival times and events.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["Event", "ArrivalTrace", "cosine_rate", "poisson_arrivals", "EVENT_KINDS"]

EVENT_KINDS = ("set_capacity", "kill", "restart", "slow_down")


@dataclasses.dataclass(frozen=True)
class Event:
    """A fault applied to one endpoint at ``at_s`` seconds into the run (``value``: concurrency or factor)."""

    at_s: float
    kind: str
    endpoint: str
    value: Optional[float] = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind {self.kind!r} is not one of {', '.join(EVENT_KINDS)}")
        if self.at_s < 0:
            raise ValueError(f"event at_s {self.at_s} must be >= 0")


def cosine_rate(base_rps: float, peak_rps: float, period_s: float) -> Callable[[float], float]:
    """rate(t): base at t = 0, peak at t = period_s / 2, back to base at t = period_s."""
    if not 0 <= base_rps <= peak_rps or period_s <= 0:
        raise ValueError("need 0 <= base_rps <= peak_rps and period_s > 0")
    amplitude = peak_rps - base_rps

    def rate(t_s: float) -> float:
        return base_rps + amplitude * (1.0 - math.cos(2.0 * math.pi * t_s / period_s)) / 2.0

    return rate


def poisson_arrivals(rate: Callable[[float], float], peak_rps: float, duration_s: float, seed: int) -> List[float]:
    """Arrival times in [0, duration_s) of a Poisson process with intensity ``rate`` (thinning; rate <= peak_rps)."""
    rng = random.Random(seed)
    times: List[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_rps)
        if t >= duration_s:
            return times
        if rng.random() * peak_rps <= rate(t):
            times.append(t)


@dataclasses.dataclass(frozen=True)
class ArrivalTrace:
    """Arrival times plus the events, replayed identically for each policy."""

    arrivals_s: Tuple[float, ...]
    events: Tuple[Event, ...]
    duration_s: float
    base_rps: float
    peak_rps: float
    period_s: float
    seed: int

    @classmethod
    def build(
        cls,
        duration_s: float,
        base_rps: float,
        peak_rps: float,
        period_s: float,
        events: Sequence[Event],
        seed: int = 0,
    ) -> "ArrivalTrace":
        rate = cosine_rate(base_rps, peak_rps, period_s)
        arrivals = poisson_arrivals(rate, peak_rps, duration_s, seed)
        ordered = tuple(sorted(events, key=lambda e: e.at_s))
        return cls(tuple(arrivals), ordered, duration_s, base_rps, peak_rps, period_s, seed)

    def rate_at(self, t_s: float) -> float:
        return cosine_rate(self.base_rps, self.peak_rps, self.period_s)(t_s)
