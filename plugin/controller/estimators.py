"""Online estimators: capacity mu_i per endpoint, demand lambda per (model, request class).

Each estimator states its formula on its class. They are plain state machines: the loop feeds them one observation per
tick (interval ``dt_s``); none reads a clock or does I/O.
"""
from __future__ import annotations

import collections
import copy
import math
from typing import Deque, Dict, Hashable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .stall import STALL_SLACK_S

__all__ = ["CapacityObservation", "CapacityEstimator", "DemandEstimator", "seed_capacity"]

#: SLO factor bounds and steps (multiplicative decrease, additive increase)
SLO_FACTOR_MIN = 0.2
SLO_FACTOR_CUT = 0.8
SLO_FACTOR_STEP = 0.1
#: f recovers only while the endpoint carries at least this share of mu
SLO_FACTOR_LOADED = 0.5
#: completions of ours in one interval below which the SLO miss share is not trusted
MIN_SAMPLES = 5
#: the SLO miss share is judged over windows of this many of our completions (one miss in 5 is not a 5% rate)
MISS_WINDOW = 20
#: time constant (s) over which a concurrency cut by the queue is re-trusted up to the hint when no queue shows
#: and nothing was served (an idle endpoint)
CONCURRENCY_RECOVERY_S = 2.5
#: slots added to a cut concurrency per tick that served requests without any queue (additive increase)
RECOVERY_STEP = 0.5
#: a tick's service time at least this multiple of the last one is a slower pool: mu follows it at once
SERVICE_JUMP = 1.5
#: EWMA weight of the busy-slot count C_obs = x s while queueing (a direct measurement: trusted fast)
QUEUE_ALPHA = 0.7
#: the demand window holds at least this many arrivals (Poisson noise ~1 / sqrt of it), and at most DEMAND_SPAN
#: times its shortest length in ticks
DEMAND_MIN_ARRIVALS = 32
DEMAND_SPAN = 4


class CapacityObservation(NamedTuple):
    """One interval of one endpoint. NaN means "not measured this interval" (no Triton metrics, no completion).
    A NamedTuple: the loop builds one per (endpoint, model) per tick, and a frozen dataclass costs 3x as much."""

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
        C       = concurrency: the max_concurrency hint C_0 (else 1), re-learnt from the server's queue:
                  queueing (pending >= 1 and mean queue wait >= s / 2, or >= C + 2 of ours in flight on two ticks in
                  a row, a tick that completed nothing included: a reloaded model's queue need not show in Triton's
                  pending count, and one tick's Poisson burst is not a smaller pool) -> every slot was busy, the busy
                  slots are the capacity,
                  C_obs = x * s with x = completed / dt (Little's law), and C <- C + 0.7 (C_obs - C) with
                  C_obs >= 1, from one completion on (fewer slots show here within a tick or two, where the service
                  time alone does not change); C rises above its value only once C_obs > C on two queueing ticks in
                  a row (one short tick's burst of answers from slots freed together is not a larger pool);
                  no queue at all (pending = 0, queue wait < s / 10) while C < C_0: requests served in the tick
                  -> C <- min(C_0, C + RECOVERY_STEP) (additive increase: capacity that came back is probed
                  upward half a slot per tick, so a pool cut to a third is trusted again within four ticks of
                  serving without a queue; a wrong step queues at once and the queue cuts it back); none served
                  and ours in flight <= C -> C <- C + b (C_0 - C), b = 1 - exp(-dt / 2.5 s);
                  a stall (below) is a reload: C <- max(C, C_0), the queue re-learns it
        f       = SLO factor in [0.2, 1], AIMD on our SLO misses m = over_slo / completed, counted over the last
                  window of our completions m = over / max(completed, 20), from >= 5 on (one miss in 5 is not a 5%
                  rate, 3 in 6 are), the increase only on a full window of 20; less the requests that were
                  in flight through a stall or a cut of C (their misses are the stall's or the smaller pool's,
                  already counted by mu_obs = 0 or by C, and must not cut mu twice):
                  m > threshold -> f <- max(0.2, 0.8 f); m <= threshold / 2 while carrying real load
                  (x >= 0.5 mu: success at a trickle says little of the target) -> f <- min(1, f + 0.1)
                  (the bar is half of mu so that f recovers under CAPACITY mode's spread too: misses from a
                  transient must not shrink mu for good)
        mu_obs  = f * C / s; 0 while stalled: >= 2 of ours in flight and nothing completed for 2 s +
                  STALL_SLACK_S, neither ours nor, where the server's counters were read, anyone's (a reload
                  holds every request until it ends and the service time shows nothing until they come out:
                  only the silence tells, and early; ours queued behind other clients' requests while the
                  server keeps completing theirs is a queue, not a stall)
        mu     <- mu + a * (mu_obs - mu),  a = alpha_down when mu_obs < mu (0.6: a halving shows 80% within two
                  ticks) else alpha_up (0.3: slow to trust good news); a = 1 when the queue cut C this tick (C is
                  a smoothed measurement already; a second EWMA would put a cut two ticks behind the queue that
                  showed it), when mu_obs < mu on a service time >= SERVICE_JUMP x the last tick's (a slow-down,
                  or requests held inside the server for a slot: fast down, the spill starts on this tick, not
                  two later), and on the first measurement of an endpoint with no max_rps hint (its prior is the
                  default, not evidence)
    Cost: O(1) per update.
    """

    __slots__ = ("mu_rps", "concurrency", "service_s", "slo_factor", "_slo_s", "_threshold", "_down", "_up",
                 "_hint", "_ok", "_over", "_quiet_s", "_forgive", "_queued_ticks", "_above", "measured")

    def __init__(self, prior_rps: float, concurrency: Optional[int], *, slo_s: float, slo_miss_threshold: float,
                 alpha_down: float, alpha_up: float, hinted: bool = True) -> None:
        """``hinted``: ``prior_rps`` is a max_rps hint (s_0 = C_0 / mu_0), not the default for an endpoint nobody
        described (then s is unknown, NaN, until measured, and the endpoint counts as meeting the SLO)."""
        self.mu_rps = float(prior_rps)
        self.concurrency = float(concurrency or 1)
        self._hint = self.concurrency
        self._ok = self._over = 0
        self._quiet_s = 0.0
        self._forgive = 0
        self._queued_ticks = 0
        self._above = 0  # queueing ticks in a row whose C_obs was above C
        self.service_s = self.concurrency / self.mu_rps if self.mu_rps > 0 and hinted else math.nan
        #: mu rests on something: a max_rps hint or a measured service time (AUTO judges demand only then)
        self.measured = bool(hinted)
        self.slo_factor = 1.0
        self._slo_s = slo_s
        self._threshold = slo_miss_threshold
        self._down = alpha_down
        self._up = alpha_up

    def like(self) -> "CapacityEstimator":
        """A fresh estimator that starts from this one's figures (mu, C, s, f) with no window of its own: the seed
        of a new endpoint from a pool mate (same hardware, same model) instead of the hint or the default."""
        fresh = copy.copy(self)
        fresh._ok = fresh._over = fresh._forgive = fresh._queued_ticks = fresh._above = 0
        fresh._quiet_s = 0.0
        return fresh

    @property
    def meets_slo(self) -> bool:
        """The endpoint can serve a request within the SLO when it is not queueing: s <= SLO."""
        return not self.service_s > self._slo_s

    @property
    def rated_rps(self) -> float:
        """C_0 / s: the configured slots at the measured service time (NaN until s is known); prices cost."""
        return self._hint / self.service_s if self.service_s > 0.0 else math.nan

    @property
    def stalled(self) -> bool:
        return self._quiet_s > 2.0 * self.service_s + STALL_SLACK_S

    @staticmethod
    def columns(estimators: Sequence["CapacityEstimator"]) -> Tuple[List[float], List[float], List[float],
                                                                    List[bool], List[float]]:
        """(concurrency, service_s, mu_rps, meets_slo, rated_rps) of every estimator, in one pass without a
        property call per estimator: the views read them for every endpoint at every tick."""
        slots: List[float] = []
        service: List[float] = []
        mu: List[float] = []
        meets: List[bool] = []
        rated: List[float] = []
        nan = math.nan
        for est in estimators:
            s = est.service_s
            slots.append(est.concurrency)
            service.append(s)
            mu.append(est.mu_rps)
            meets.append(not s > est._slo_s)  # meets_slo
            rated.append(est._hint / s if s > 0.0 else nan)  # rated_rps
        return slots, service, mu, meets, rated

    def update(self, obs: CapacityObservation) -> float:
        if obs.dt_s <= 0.0:
            return self.mu_rps
        silent = obs.ours_completed == 0 and obs.completed == 0 and obs.in_flight >= 2
        self._quiet_s = self._quiet_s + obs.dt_s if silent else 0.0
        # counted on every tick: a pool cut to one slot may complete nothing on the tick after the cut
        self._queued_ticks = self._queued_ticks + 1 if obs.in_flight >= self.concurrency + 2 else 0
        if silent and self.stalled:  # not silent: quiet 0 s, never a stall (the property's call saved per tick)
            self._forgive = max(self._forgive, obs.in_flight)
            self.concurrency = max(self.concurrency, self._hint)  # a reload: the old C is moot, the queue re-learns it
            self.mu_rps -= self._down * self.mu_rps
            return self.mu_rps
        if not obs.service_s > 0.0:
            return self.mu_rps  # nothing measured: keep the estimate
        jumped = obs.service_s >= SERVICE_JUMP * self.service_s  # False while s is unknown (NaN)
        self.service_s = obs.service_s
        first, self.measured = not self.measured, True
        x = obs.completed / obs.dt_s
        queue_cut = self._update_concurrency(obs, x)
        self._update_slo_factor(obs, x)
        mu_obs = self.slo_factor * self.concurrency / obs.service_s
        # the default prior is no evidence; a queue-measured C is already smoothed (QUEUE_ALPHA): no second lag;
        # a jump of the service time is a slower pool now (a slow-down, requests held for a slot): believed at once
        alpha = (1.0 if first or queue_cut or (jumped and mu_obs < self.mu_rps)
                 else self._down if mu_obs < self.mu_rps else self._up)
        self.mu_rps += alpha * (mu_obs - self.mu_rps)
        return self.mu_rps

    def _update_concurrency(self, obs: CapacityObservation, x_rps: float) -> bool:
        """Returns True when the queue cut C this tick."""
        queueing = (obs.pending >= 1.0 and obs.queue_s >= 0.5 * obs.service_s) or self._queued_ticks >= 2
        if queueing and obs.completed >= 1:
            c_obs = max(x_rps * obs.service_s, 1.0)
            cut = c_obs < self.concurrency
            self._above = self._above + 1 if c_obs > self.concurrency else 0
            if cut:  # the misses so far are the old C's: counted there, not again in f
                self._ok = self._over = 0
                self._forgive = max(self._forgive, obs.in_flight)
            if cut or self._above >= 2:  # a larger pool on two ticks in a row: one tick's burst is not one
                self.concurrency += QUEUE_ALPHA * (c_obs - self.concurrency)
            return cut
        self._above = 0  # "in a row": a tick without a queue in between starts the count again
        if obs.pending == 0.0 and obs.queue_s < 0.1 * obs.service_s and self.concurrency < self._hint:
            if obs.completed >= 1:  # served without a queue: probe one step up (the queue cuts it again if wrong)
                self.concurrency = min(self._hint, self.concurrency + RECOVERY_STEP)
            elif obs.in_flight <= self.concurrency:
                self.concurrency += (1.0 - math.exp(-obs.dt_s / CONCURRENCY_RECOVERY_S)) * (self._hint - self.concurrency)
        return False

    def _update_slo_factor(self, obs: CapacityObservation, x_rps: float) -> None:
        if self.service_s > self._slo_s:  # not meets_slo, inline
            return
        forgiven = min(self._forgive, obs.ours_over_slo)
        self._forgive -= forgiven
        self._ok += obs.ours_completed - forgiven
        self._over += obs.ours_over_slo - forgiven
        if self._ok < MIN_SAMPLES:
            return
        miss = self._over / max(self._ok, MISS_WINDOW)
        if miss <= self._threshold and self._ok < MISS_WINDOW:
            return  # not conclusive yet: keep counting
        self._ok = self._over = 0
        if miss > self._threshold:
            self.slo_factor = max(SLO_FACTOR_MIN, self.slo_factor * SLO_FACTOR_CUT)
        elif miss <= self._threshold / 2 and x_rps >= SLO_FACTOR_LOADED * self.mu_rps:
            self.slo_factor = min(1.0, self.slo_factor + SLO_FACTOR_STEP)


class DemandEstimator:
    """Demand lambda per key (model, request class): the arrivals actually counted over a window of recent ticks.

        n_k, dt_k = arrivals and length of tick k            (user requests, not retries)
        lambda    = sum(n_k) / sum(dt_k) over the newest ticks, at least W = round(2 / alpha - 1) of them (the
                    equal-weight window whose noise matches an EWMA of weight alpha: 6 ticks at 0.3) and then as
                    many more as it takes to hold DEMAND_MIN_ARRIVALS arrivals, up to DEMAND_SPAN x W ticks
    An EWMA of per-tick rates at 0.1 s ticks averages 1-2 arrivals per tick over ~3 ticks: at a true 16 req/s it
    read 6.7-25.8 req/s and flapped AUTO mode. A window of counted arrivals has Poisson noise 1 / sqrt(arrivals):
    about 18% at 32 arrivals, whatever the tick. Symmetric on purpose: a fast-attack / slow-decay estimate rides the
    upper envelope of the noise and makes steady load look like more than it is. A step in load is fully seen after
    W ticks. A key seen for the first time counts from 0 (the router's counters start at 0 with the dispatcher).
    Cost: O(keys x DEMAND_SPAN x W) per update.
    """

    def __init__(self, alpha: float) -> None:
        self._alpha = alpha
        self._min_ticks = max(1, int(round(2.0 / alpha - 1.0)))
        self._max_ticks = DEMAND_SPAN * self._min_ticks
        self._last: Dict[Hashable, int] = {}
        self._window: Dict[Hashable, Deque[Tuple[int, float]]] = {}
        self.rates: Dict[Hashable, float] = {}

    def update(self, arrivals: Mapping[Hashable, int], dt_s: float) -> Dict[Hashable, float]:
        if dt_s <= 0.0:
            return self.rates
        for key, count in arrivals.items():
            window = self._window.get(key)
            if window is None:
                window = self._window[key] = collections.deque(maxlen=self._max_ticks)
            window.append((max(0, count - self._last.get(key, 0)), dt_s))
            self._last[key] = count
            self.rates[key] = self._rate(window)
        return self.rates

    def _rate(self, window: Deque[Tuple[int, float]]) -> float:
        """The newest ticks' arrivals over their span (class docstring)."""
        total, span_s, ticks = 0, 0.0, 0
        for n, dt_s in reversed(window):
            total, span_s, ticks = total + n, span_s + dt_s, ticks + 1
            if ticks >= self._min_ticks and total >= DEMAND_MIN_ARRIVALS:
                break
        return total / span_s
