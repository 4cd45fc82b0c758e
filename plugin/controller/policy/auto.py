"""AUTO mode: COST while the cheap set holds the demand with margin, CAPACITY on a shortfall, back after a dwell."""
from __future__ import annotations

import collections
import dataclasses
import math
import statistics
from typing import Deque, Dict, Optional, Sequence, Tuple

from ..model import AUTO, CAPACITY, COST

__all__ = ["Shortfall", "detect_shortfall", "AutoMode", "ModeChange", "RoomMedian", "MISS_PERSIST_TICKS",
           "UNSETTLED_SHARE", "DEMAND_SUSTAIN", "ROOM_TICKS"]

#: SLO misses must show on this many consecutive ticks to count (one unlucky interval is not a shortfall)
MISS_PERSIST_TICKS = 2
#: a demand shortfall counts once the relative excess over the enter threshold, summed over the ticks since it
#: began, reaches this (three ticks at 10% over, one at 30%): one tick's noise above the threshold is not a shortfall
DEMAND_SUSTAIN = 0.3
#: one tick's relative excess counts at most this much (an empty cheap set: the whole sum at once)
EXCESS_CAP = 1.0
#: the room K that AUTO judges is the median of the last this many ticks' (RoomMedian)
ROOM_TICKS = 5
#: a demand shortfall judged on an estimated room K below this share of the rated room K_r is on an unsettled
#: estimate (the slots and measured service times say the cheap set holds far more): its switch is tentative
UNSETTLED_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Shortfall:
    """What the signals say this tick. ``reasons`` empty: no shortfall; ``clear``: below every exit threshold."""

    reasons: Tuple[str, ...]
    clear: bool
    figures: Dict[str, float]


def detect_shortfall(demand_rps: float, cheap_capacity_rps: float, miss_share: float, error_share: float,
                     events: Sequence[str], *, cost_margin: float, hysteresis: float,
                     slo_miss_threshold: float, capacity_known: bool = True,
                     rated_capacity_rps: float = math.nan) -> Shortfall:
    """Enter thresholds (any one is a shortfall) and exit thresholds (all must hold to be clear):

        demand      enter: lambda > cost_margin x K              exit: lambda <= (cost_margin - hysteresis) x K
                    with K = sum over the interactive-eligible endpoints of (min(target_utilisation, u_slo_i) x mu_i
                    - external_i) (``EndpointView.safe_room_rps``: the load each can take within the SLO);
                    judged only when ``capacity_known`` (every such mu_i rests on a hint or a measurement: at
                    start-up K is the default prior, and "COST failed at this load" would be remembered for no
                    failure at all)
        slo_misses  enter: miss share > slo_miss_threshold      exit: miss share <= slo_miss_threshold / 2
        errors      enter: error share > slo_miss_threshold     exit: error share <= slo_miss_threshold / 2
                    (failed attempts at the endpoints still routable, ``deltas.Shares``: those of a down or
                    ejected one are its event, judged below)
        events      an endpoint that carried interactive load went down or was ejected this tick, while the
                    demand exceeds cost_margin x the room left (the Decider passes only such: where the endpoints
                    left hold it with COST's margin, the plan moves the load and nothing falls short); a capacity
                    cut is not an event: the plan moves the load off it, and demand above K shows a real shortfall
    NaN shares (too few requests to tell) count as neither. ``rated_capacity_rps`` (K from the configured slots
    and the measured service times, see AutoMode) only rides along in the figures, and so does the relative excess
    ``demand_excess`` = lambda / (cost_margin x K) - 1 (at most EXCESS_CAP; AutoMode sums it: a demand shortfall
    must be sustained). O(1) plus the events.
    """
    reasons = []
    threshold_rps = cost_margin * cheap_capacity_rps
    if capacity_known and demand_rps > threshold_rps:
        reasons.append("demand")
    if miss_share > slo_miss_threshold:
        reasons.append("slo_misses")
    if error_share > slo_miss_threshold:
        reasons.append("errors")
    reasons.extend(events)
    clear = ((not capacity_known or demand_rps <= max(0.0, cost_margin - hysteresis) * cheap_capacity_rps)
             and not miss_share > slo_miss_threshold / 2 and not error_share > slo_miss_threshold / 2 and not events)
    excess = (demand_rps / threshold_rps - 1.0 if threshold_rps > 0.0 else EXCESS_CAP if demand_rps > 0.0
              else 0.0) if capacity_known else 0.0
    figures = {"demand_rps": demand_rps, "cheap_capacity_rps": cheap_capacity_rps,
               "rated_capacity_rps": _finite(rated_capacity_rps), "demand_excess": min(excess, EXCESS_CAP),
               "miss_share": _finite(miss_share), "error_share": _finite(error_share)}
    return Shortfall(tuple(reasons), clear, figures)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


@dataclasses.dataclass(frozen=True)
class ModeChange:
    at_s: float
    old: str
    new: str
    reasons: Tuple[str, ...]
    figures: Dict[str, float]


class AutoMode:
    """The mode in force. Configured COST or CAPACITY: fixed. Configured AUTO (the default), a two-state machine:

        COST     -> CAPACITY  as soon as a shortfall shows: slo_misses only after MISS_PERSIST_TICKS ticks in a row,
                              demand only once it is sustained: S = max(0, S + e) per tick with e the tick's
                              relative excess lambda / (cost_margin x K) - 1 (negative below the threshold), and
                              S >= DEMAND_SUSTAIN (a CUSUM test: 3 ticks at 10% over, one at 30% or more; the noise
                              of lambda and K about a load just under the threshold does not add up to it)
        CAPACITY -> COST      once the signals have been clear (exit thresholds, see detect_shortfall) for dwell_s
                              and, when the switch was load-driven (demand or slo_misses at lambda_fail), once
                              lambda <= (1 - hysteresis) x lambda_fail: COST already failed at that load, and
                              CAPACITY mode hiding the misses is no evidence that COST would now hold it.
                              While in CAPACITY, lambda_fail <- min(lambda_fail, lambda_mean) with lambda_mean a
                              slow EWMA (a = 0.05) of lambda: a noisy high sample at the switch does not lower
                              the bar. lambda_fail is forgotten on evidence that the cheap set grew:
                              - an endpoint came back (ready again, re-admitted) or was added (``capacity_grew``);
                              - the rated room K_r = sum(min(u, u_slo_i) x C_0,i / s_i) grew past 1.25 x K_r at
                                the failure: the service times s_i fell (a slow-down ended); s_i is the server's
                                compute time per request, measured at any load, so CAPACITY mode's lighter load
                                does not fake it;
                              - memory_s (20 dwell times) passed: a capacity that came back with no sign (a reload
                                with more instances) is tried again at most that late.
                              Not on the estimated room K itself: under CAPACITY mode's light load the mu
                              estimates re-trust the configured slots, so K grows without any capacity coming
                              back, and forgetting on it would send steady load back to a COST mode that fails.
                              Except a tentative switch: one for demand alone (no misses, errors or events: COST
                              had not failed) while K < UNSETTLED_SHARE x K_r: the estimated room contradicts the
                              rated one (the mu estimates have not settled). Its lambda_fail does not hold
                              CAPACITY: it returns to COST once the exit thresholds (on the K of the day) have held
                              for the dwell. At most one tentative switch per memory_s: a second demand switch
                              within it is kept as a load-driven failure, so a real shortfall costs one round trip.
    The gap between the enter and exit thresholds, the sustained-excess test, the dwell and lambda_fail are the
    hysteresis. A steady load between the exit and enter thresholds can still switch now and then: lambda is a
    count of Poisson arrivals (``estimators.DemandEstimator``: ~18% noise over 32 arrivals), and at 4% under the
    threshold a second's excess of 10-20% is real arrival noise, not an estimate's.
    """

    def __init__(self, configured: str = AUTO, dwell_s: float = 5.0, hysteresis: float = 0.1) -> None:
        if configured not in (AUTO, COST, CAPACITY):
            raise ValueError(f"mode must be one of auto, cost, capacity, got {configured!r}")
        self.configured = configured
        self.mode = CAPACITY if configured == CAPACITY else COST
        self.dwell_s = dwell_s
        self._clear_since: Optional[float] = None
        self._miss_ticks = 0
        self.switches = 0
        self.hysteresis = hysteresis
        self.memory_s = 20.0 * dwell_s
        self.fail_demand_rps: Optional[float] = None
        self._fail_at = -math.inf
        self._fail_rated_rps = 0.0
        self._mean_demand_rps: Optional[float] = None
        self.tentative = False  # the CAPACITY in force came from a tentative switch (class docstring)
        self._tentative_at = -math.inf
        self.excess_sum = 0.0  # S of the demand test (class docstring)

    def update(self, now: float, shortfall: Shortfall, capacity_grew: bool = False) -> Optional[ModeChange]:
        """Feed one tick; returns the change when the mode switched."""
        self._miss_ticks = self._miss_ticks + 1 if "slo_misses" in shortfall.reasons else 0
        if (capacity_grew or now - self._fail_at > self.memory_s
                or shortfall.figures.get("rated_capacity_rps", 0.0) > 1.25 * self._fail_rated_rps):
            self.fail_demand_rps = None
        if self.configured != AUTO:
            return None
        if self.mode == COST:
            self.excess_sum = max(0.0, self.excess_sum + shortfall.figures.get("demand_excess", 0.0))
            reasons = tuple(r for r in shortfall.reasons
                            if (r != "slo_misses" or self._miss_ticks >= MISS_PERSIST_TICKS)
                            and (r != "demand" or self.excess_sum >= DEMAND_SUSTAIN))
            if reasons:
                self._clear_since = None
                if "demand" in reasons or "slo_misses" in reasons:
                    self.fail_demand_rps, self._fail_at = shortfall.figures["demand_rps"], now
                    self._fail_rated_rps = shortfall.figures.get("rated_capacity_rps", 0.0)
                    self._mean_demand_rps = shortfall.figures["demand_rps"]
                self.tentative = self._unsettled(shortfall.reasons, shortfall.figures, now)
                if self.tentative:
                    self._tentative_at = now
                    reasons = reasons + ("tentative: estimated room below half the rated room",)
                return self._switch(now, CAPACITY, reasons, shortfall.figures)
            return None
        self._track_demand(shortfall.figures["demand_rps"])
        if not shortfall.clear or not self._below_failure(shortfall.figures["demand_rps"]):
            self._clear_since = None
            return None
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since >= self.dwell_s:
            figures = dict(shortfall.figures, clear_for_s=now - self._clear_since)
            return self._switch(now, COST, ("shortfall gone for the dwell time",), figures)
        return None

    def _track_demand(self, demand_rps: float) -> None:
        mean = demand_rps if self._mean_demand_rps is None else self._mean_demand_rps
        self._mean_demand_rps = mean + 0.05 * (demand_rps - mean)
        if self.fail_demand_rps is not None:
            self.fail_demand_rps = min(self.fail_demand_rps, self._mean_demand_rps)

    def _below_failure(self, demand_rps: float) -> bool:
        return (self.tentative or self.fail_demand_rps is None
                or demand_rps <= (1.0 - self.hysteresis) * self.fail_demand_rps)

    def _unsettled(self, reasons: Tuple[str, ...], figures: Dict[str, float], now: float) -> bool:
        """A switch for demand alone (``reasons``: this tick's, misses not yet persistent included) on an unsettled
        estimate (class docstring), the first in memory_s."""
        room, rated = figures.get("cheap_capacity_rps", 0.0), figures.get("rated_capacity_rps", 0.0)
        return (reasons == ("demand",) and rated > 0.0 and room < UNSETTLED_SHARE * rated
                and now - self._tentative_at > self.memory_s)

    def _switch(self, now: float, new: str, reasons: Tuple[str, ...], figures: Dict[str, float]) -> ModeChange:
        change = ModeChange(now, self.mode, new, reasons, figures)
        self.excess_sum = 0.0
        if new == COST:
            self.tentative = False
        self.mode = new
        self.switches += 1
        return change


class RoomMedian:
    """The room K that AUTO judges, per model: the median of the last ROOM_TICKS ticks' K. One tick's K can drop by
    a third and come back (an endpoint's SLO-safe share reads a moment of phantom external load, its mu a short
    queue); the median ignores up to two such ticks in five and follows a lasting change within three. O(ROOM_TICKS)
    per model per tick."""

    def __init__(self, ticks: int = ROOM_TICKS) -> None:
        self._ticks = ticks
        self._last: Dict[Optional[str], Deque[float]] = {}

    def update(self, model: Optional[str], room_rps: float) -> float:
        window = self._last.get(model)
        if window is None:
            window = self._last[model] = collections.deque(maxlen=self._ticks)
        window.append(room_rps)
        return statistics.median(window)
