"""Online estimators: capacity mu_i per endpoint, demand lambda per (model, request class).

Each estimator states its formula on its class. They are plain state machines: the loop feeds them one observation per
tick (interval ``dt_s``); none reads a clock or does I/O.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Hashable, Mapping, Optional

__all__ = ["CapacityObservation", "CapacityEstimator", "DemandEstimator", "seed_capacity"]

#: SLO factor bounds and steps (multiplicative decrease, additive increase)
SLO_FACTOR_MIN = 0.2
SLO_FACTOR_CUT = 0.8
SLO_FACTOR_STEP = 0.02
#: completions of ours in one interval below which the SLO miss share is not trusted
MIN_SAMPLES = 5


@dataclasses.dataclass(frozen=True)
class CapacityObservation:
    """One interval of one endpoint. NaN means "not measured this interval" (no Triton metrics, no completion)."""

    dt_s: float
    completed: int = 0               # successful completions at the server (all clients) in the interval
    service_s: float = math.nan      # mean compute time per request (Triton), else our mean latency
    queue_s: float = math.nan        # mean queue wait per request at the server
    pending: float = math.nan        # requests waiting at the server at the end of the interval
    in_flight: int = 0               # our requests in flight at the end of the interval
    ours_completed: int = 0          # our successful completions in the interval
    ours_over_slo: int = 0           # ... of which over the SLO


def seed_capacity(max_rps: Optional[float], max_concurrency: Optional[int], default_rps: float) -> float:
    """The prior mu_0: the max_rps hint, else the default (the concurrency hint alone says nothing of speed)."""
    return float(max_rps) if max_rps else float(default_rps)


class CapacityEstimator:
    """Capacity within the SLO of one endpoint, mu_i in requests/s, learned online and seeded by the hints.

        s       = mean service time per request in the interval (Triton compute_us delta / success delta)
        C       = concurrency: the max_concurrency hint (else 1); when deeply saturated (mean queue wait >= s and
                  pending >= C: every slot busy all interval) Little's law on the busy slots re-learns it:
                  C <- (C + x * s) / 2 with x = completed / dt (needs >= 3 completions)
        f       = SLO factor in [0.2, 1], AIMD on our SLO misses m = over_slo / completed (>= 5 completions):
                  m > threshold -> f <- max(0.2, 0.8 f); m <= threshold / 2 while loaded near the plan's target
                  (x >= 0.7 mu: success at a lower load says nothing of the target) -> f <- min(1, f + 0.02)
        mu_obs  = f * C / s
        mu     <- mu + a * (mu_obs - mu),  a = alpha_down when mu_obs < mu (0.6: a halving shows 80% within two
                  ticks) else alpha_up (0.3: slow to trust good news)
    Cost: O(1) per update.
    """

    __slots__ = ("mu_rps", "concurrency", "service_s", "slo_factor", "_slo_s", "_threshold", "_down", "_up")

    def __init__(self, prior_rps: float, concurrency: Optional[int], *, slo_s: float, slo_miss_threshold: float,
                 alpha_down: float, alpha_up: float) -> None:
        self.mu_rps = float(prior_rps)
        self.concurrency = float(concurrency or 1)
        self.service_s = self.concurrency / self.mu_rps if self.mu_rps > 0 else math.nan
        self.slo_factor = 1.0
        self._slo_s = slo_s
        self._threshold = slo_miss_threshold
        self._down = alpha_down
        self._up = alpha_up

    @property
    def meets_slo(self) -> bool:
        """The endpoint can serve a request within the SLO when it is not queueing: s <= SLO."""
        return not self.service_s > self._slo_s

    def update(self, obs: CapacityObservation) -> float:
        if obs.dt_s <= 0.0 or not obs.service_s > 0.0:
            return self.mu_rps  # nothing measured: keep the estimate
        self.service_s = obs.service_s
        x = obs.completed / obs.dt_s
        saturated = obs.queue_s >= obs.service_s and obs.pending >= self.concurrency
        if saturated and obs.completed >= 3:
            self.concurrency = 0.5 * (self.concurrency + x * obs.service_s)
        self._update_slo_factor(obs, x)
        mu_obs = self.slo_factor * self.concurrency / obs.service_s
        alpha = self._down if mu_obs < self.mu_rps else self._up
        self.mu_rps += alpha * (mu_obs - self.mu_rps)
        return self.mu_rps

    def _update_slo_factor(self, obs: CapacityObservation, x_rps: float) -> None:
        if obs.ours_completed < MIN_SAMPLES or not self.meets_slo:
            return
        miss = obs.ours_over_slo / obs.ours_completed
        if miss > self._threshold:
            self.slo_factor = max(SLO_FACTOR_MIN, self.slo_factor * SLO_FACTOR_CUT)
        elif miss <= self._threshold / 2 and x_rps >= 0.7 * self.mu_rps:
            self.slo_factor = min(1.0, self.slo_factor + SLO_FACTOR_STEP)


class DemandEstimator:
    """Demand lambda per key (model, request class), from cumulative arrival counts.

        r       = (arrivals_now - arrivals_last) / dt          (user requests, not retries)
        lambda <- lambda + a * (r - lambda),   a = demand_alpha (0.3 per 0.5 s tick: a time constant of ~1.4 s)
    Symmetric on purpose: a fast-attack / slow-decay EWMA rides the upper envelope of Poisson noise and makes
    steady load look like more than it is (that flaps AUTO mode).
    A key seen for the first time counts from 0 (the router's counters start at 0 with the dispatcher).
    Cost: O(keys) per update.
    """

    def __init__(self, alpha: float) -> None:
        self._alpha = alpha
        self._last: Dict[Hashable, int] = {}
        self.rates: Dict[Hashable, float] = {}

    def update(self, arrivals: Mapping[Hashable, int], dt_s: float) -> Dict[Hashable, float]:
        if dt_s <= 0.0:
            return self.rates
        for key, count in arrivals.items():
            rate = max(0, count - self._last.get(key, 0)) / dt_s
            self._last[key] = count
            lam = self.rates.get(key)
            if lam is None:
                self.rates[key] = rate
                continue
            self.rates[key] = lam + self._alpha * (rate - lam)
        return self.rates

    def total(self, request_class: str) -> float:
        """Sum of lambda over the models of one request class (keys are (model, request_class))."""
        return sum(rate for key, rate in self.rates.items() if isinstance(key, tuple) and key[1] == request_class)
