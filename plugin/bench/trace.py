"""Open-loop arrivals and capacity events: the same trace is replayed for every policy.

Arrivals are a non-homogeneous Poisson process whose rate follows a cosine wave, as the paper's load generator did::

    rate(t) = base_rps + (peak_rps - base_rps) * (1 - cos(2 pi t / period_s)) / 2

drawn by thinning (Lewis & Shedler): candidates at the peak rate, each kept with probability rate(t) / peak_rps.
Cost O(peak_rps x duration_s). Seeded, so every policy sees exactly the same arrival times and events.

A trace may open with a steady stretch: ``steady_rps`` for the first ``steady_s`` seconds, then the cosine wave over
the rest (its period: ``period_s`` from the end of the stretch).

Events: ``set_capacity`` (value: slots), ``kill`` and ``restart``, ``slow_down`` (value: factor), ``freeze`` and
``thaw`` (SIGSTOP / SIGCONT: connections hang instead of being refused), ``reclaim`` (a spot reclaim: the pool's
server is killed at ``at_s``, its requests in flight fail; ``value`` is the notice in seconds, given at
``at_s - value``, which no policy here reads).
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["Event", "ArrivalTrace", "cosine_rate", "poisson_arrivals", "EVENT_KINDS"]

EVENT_KINDS = ("set_capacity", "kill", "restart", "slow_down", "freeze", "thaw", "reclaim")


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
    steady_s: float = 0.0
    steady_rps: float = 0.0

    @classmethod
    def build(
        cls,
        duration_s: float,
        base_rps: float,
        peak_rps: float,
        period_s: float,
        events: Sequence[Event],
        seed: int = 0,
        steady_s: float = 0.0,
        steady_rps: float = 0.0,
    ) -> "ArrivalTrace":
        if steady_s < 0 or steady_rps < 0 or (steady_s > 0 and steady_rps <= 0):
            raise ValueError("need steady_s >= 0, and steady_rps > 0 when there is a steady stretch")
        cosine_rate(base_rps, peak_rps, period_s)  # validates
        trace = cls((), (), duration_s, base_rps, peak_rps, period_s, seed, steady_s, steady_rps)
        arrivals = poisson_arrivals(trace.rate_at, max(peak_rps, steady_rps), duration_s, seed)
        ordered = tuple(sorted(events, key=lambda e: e.at_s))
        return dataclasses.replace(trace, arrivals_s=tuple(arrivals), events=ordered)

    def rate_at(self, t_s: float) -> float:
        if t_s < self.steady_s:
            return self.steady_rps
        return cosine_rate(self.base_rps, self.peak_rps, self.period_s)(t_s - self.steady_s)
