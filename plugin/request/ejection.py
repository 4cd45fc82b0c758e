"""Outlier ejection with a growing backoff, a cap on the ejected share, and Envoy's panic mode: the one ejection
rule. A controller holds it (``tritonmix.controller.health``: tick counts, request-path reports, readiness probes);
a router without a controller holds its own for the request-path reports alone (``tritonmix.request.router``)."""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Dict, List, Mapping, Optional, Sequence

from .slots import SlotArrays

__all__ = ["EjectionEvent", "OutlierDetector", "in_panic"]

#: a connection failure (never reached the server) of an endpoint that its probes find ready is a client reconnecting
#: (a gRPC channel in its reconnect backoff after a restart): readmitted by a ready probe started this long after the
#: ejection, doubling with each further ejection in the episode (capped by the backoff), not after the whole backoff
RECONNECT_GRACE_S = 0.25
#: the miss-share rule: an endpoint with at least MISS_MIN_OK of our completions in a tick, MISS_SHARE of them over
#: the SLO, in a pool (>= 3 measured) whose median share is at most MISS_POOL_SHARE
MISS_MIN_OK = 3
MISS_SHARE = 0.5
MISS_POOL_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class EjectionEvent:
    kind: str                 # "eject" | "readmit" | "eject_refused"
    index: int
    reason: str
    figures: Dict[str, float]


def in_panic(healthy: int, total: int, panic_threshold: float) -> bool:
    """Panic when healthy / total < panic_threshold: route over every endpoint, healthy or not (Envoy): a fleet
    that has lost most of its endpoints is likelier to be misjudged than to be broken."""
    return total > 0 and healthy < panic_threshold * total


class OutlierDetector(SlotArrays):
    """Ejects endpoints that fail or are far slower than their pool, for a backoff that grows with each ejection.
    The one holder of ejection state while a controller runs: the router's request-path signal (``report``) and
    the tick's counts (``update``) both decide here.

        failure streak   ok == 0 in the tick: streak += failed;  else streak = failed if failed > ok else 0
                         eject when streak >= consecutive_failures
        latency outlier  latency_i > max(latency_factor x median latency of its pool, slo_s), with >= 3 endpoints
                         of the pool measured and at least one completion of i this tick; or, from the request
                         path (no scrape lag: a slowed endpoint shows one tick sooner), >= 3 of our completions at
                         i this tick, at least half of them over the SLO, while the median share over the SLO in
                         its pool (>= 3 endpoints measured) is at most 10% (an overloaded pool is no outlier) and
                         our latency at i is over latency_factor x its pool's median (queueing is no outlier)
        backoff          k-th ejection lasts min(base_s x 2^(k-1), max_s); k restarts at 0 when the previous
                         ejection ended more than max_s ago
        back up          an endpoint ejected for failures that a readiness probe then saw down (refused,
                         unavailable: ``note_ready(False)``) is readmitted by the first probe started after that
                         which says ready (``note_ready(True)``): the backoff is for endpoints that are up but bad,
                         not for dead ones that came back (Envoy: successful_active_health_check_uneject_host);
                         one ejected for a connection failure while its probes say ready (a client's channel still
                         reconnecting) by a ready probe started RECONNECT_GRACE_S x 2^(k-2) after the ejection
        probation        an endpoint readmitted when the backoff of a latency ejection ended is on probation for
                         ``probation_s``, renewed by ``probation_s`` at its end while no request of ours has
                         completed there since the readmission (the plan gives it a trial share only,
                         ``on_probation``: a window that drew no trial measured nothing, and the service time it
                         learnt while slow would keep it out for good); a tick in it with one completion of its
                         over max(factor x pool median, SLO) or over the SLO alone ejects it again at once, with
                         the next (doubled) backoff
        cap              an ejection that would put more than floor(max_share x n) (at least ``min_cap``) endpoints
                         out is refused (logged once per episode)
    O(n) per tick (plus a median per pool).
    """

    def __init__(self, n: int, *, consecutive_failures: int = 3, base_s: float = 2.0, max_s: float = 60.0,
                 max_share: float = 0.5, latency_factor: float = 3.0, slo_s: float = 1.0,
                 probation_s: float = 1.0, min_cap: int = 1) -> None:
        """``min_cap``: the cap is at least this many endpoints (1 under a controller, whose panic mode routes over
        every endpoint when too few are left; 0 without one: a fleet of one is never ejected whole)."""
        self.n = n
        self._k_fail = max(1, consecutive_failures)
        self._base_s, self._max_s = base_s, max_s
        self._max_share, self._min_cap = max_share, min_cap
        self._cap = max(min_cap, math.floor(max_share * n)) if max_share > 0 else 0
        self._factor, self._slo_s = latency_factor, slo_s
        self.streak: List[int] = [0] * n
        self.ejections: List[int] = [0] * n
        self.until: List[Optional[float]] = [None] * n
        self._ended: List[float] = [-math.inf] * n
        self._refused: List[bool] = [False] * n
        #: why each endpoint is out ("failure" | "latency"), when it went, whether a probe saw it down since
        self.cause: List[Optional[str]] = [None] * n
        self._ejected_at: List[float] = [-math.inf] * n
        self._down_seen: List[bool] = [False] * n
        self._down_at: List[float] = [-math.inf] * n
        self._unreached: List[bool] = [False] * n
        self.probation_until: List[Optional[float]] = [None] * n
        self._tried: List[bool] = [False] * n  # a request of ours completed there since the readmission
        self.probation_s = probation_s
        self._pools: List[str] = []
        self._pool_groups: Dict[str, List[int]] = {}

    #: per-endpoint state and its fresh value (``slots.SlotArrays``: endpoints that join and leave)
    SLOTS = {"streak": 0, "ejections": 0, "until": None, "_ended": -math.inf, "_refused": False, "cause": None,
             "_ejected_at": -math.inf, "_down_seen": False, "_down_at": -math.inf, "_unreached": False,
             "probation_until": None, "_tried": False}

    def grow_slots(self, n: int) -> None:
        """Fresh endpoints up to ``n``; the cap follows the new count."""
        super().grow_slots(n)
        self.n = max(self.n, n)
        self._cap = max(self._min_cap, math.floor(self._max_share * self.n)) if self._max_share > 0 else 0

    def ejected(self, i: int) -> bool:
        return self.until[i] is not None

    def on_probation(self, i: int, now: float) -> bool:
        until = self.probation_until[i]
        return until is not None and now < until

    def note_ready(self, now: float, i: int, ready: Optional[bool], started_s: float) -> Optional[EjectionEvent]:
        """A readiness answer for endpoint i from a probe started at ``started_s``: "down" (False) marks an
        endpoint ejected for failures as dead; the first "ready" of a probe started after that readmits it now.
        None (unknown) changes nothing. O(1)."""
        if self.until[i] is None or ready is None or self.cause[i] != "failure":
            return None
        if ready is False:
            if started_s >= self._ejected_at[i]:
                self._down_seen[i] = True
                self._down_at[i] = max(self._down_at[i], started_s)
            return None
        if self._down_seen[i]:
            if started_s <= self._down_at[i]:
                return None
            return self._end(now, i, "ready again after being down", {"ejections": float(self.ejections[i])})
        if not self._unreached[i]:
            return None
        grace_s = min(RECONNECT_GRACE_S * 2 ** max(0, self.ejections[i] - 2), self.until[i] - self._ejected_at[i])
        if started_s < self._ejected_at[i] + grace_s:
            return None
        return self._end(now, i, "ready; its connection failed while it was up (reconnecting)",
                         {"ejections": float(self.ejections[i]), "grace_s": grace_s})

    @property
    def ejected_count(self) -> int:
        return sum(u is not None for u in self.until)

    def update(self, now: float, ok: Sequence[int], failed: Sequence[int], latency_s: Sequence[float],
               pools: Sequence[str], over_slo: Optional[Sequence[int]] = None,
               ours_s: Optional[Sequence[float]] = None) -> List[EjectionEvent]:
        """One tick: readmissions whose backoff ended, then the ejections. ``over_slo``: our completions of the tick
        over the SLO per endpoint, ``ours_s``: our EWMA latency per endpoint (the request path's own figures, no
        scrape lag), for the miss-share rule."""
        events = self.readmit_due(now)
        if self._pools != pools:  # the endpoints of each pool, kept while the pools do not change
            self._pools, self._pool_groups = list(pools), _groups(pools)
        groups = self._pool_groups
        medians = _pool_medians(latency_s, groups)
        shares = _miss_shares(ok, over_slo) if over_slo is not None else [math.nan] * self.n
        share_medians = _pool_medians(shares, groups, positive=False)
        ours = list(ours_s) if ours_s is not None else [math.nan] * self.n
        ours_medians = _pool_medians(ours, groups)
        streak, tried, probation = self.streak, self._tried, self.probation_until
        k_fail, slo_s = self._k_fail, self._slo_s
        for i in range(self.n):
            streak[i] = streak[i] + failed[i] if ok[i] == 0 else (failed[i] if failed[i] > ok[i] else 0)
            tried[i] = tried[i] or ok[i] > 0
            until = probation[i]
            if until is not None and now >= until and not tried[i]:
                probation[i] = now + self.probation_s  # no trial answered yet: another window
            if self.until[i] is not None:
                continue
            # _why finds a reason only for a streak or a completion over the SLO: the others skip the call
            if streak[i] >= k_fail or (ok[i] and latency_s[i] > slo_s):
                reason, figures = self._why(i, ok[i], latency_s[i], medians.get(pools[i]), self.on_probation(i, now))
            else:
                reason, figures = None, {}
            if reason is None and ok[i] >= MISS_MIN_OK and shares[i] >= MISS_SHARE:
                median, ours_median = share_medians.get(pools[i]), ours_medians.get(pools[i])
                if (median is not None and median <= MISS_POOL_SHARE and ours_median is not None
                        and ours[i] > self._factor * ours_median):
                    reason, figures = "latency outlier (SLO misses)", {"miss_share": shares[i],
                                                                       "pool_median_miss_share": median,
                                                                       "latency_s": ours[i],
                                                                       "pool_median_s": ours_median}
            if reason is None:
                self._refused[i] = False
            elif self.ejected_count >= self._cap:
                if not self._refused[i]:
                    self._refused[i] = True
                    events.append(EjectionEvent("eject_refused", i, f"{reason}; max ejected share reached",
                                                dict(figures, ejected=self.ejected_count, cap=self._cap)))
            else:
                events.append(self._eject(now, i, reason, figures))
        return events

    def report(self, now: float, i: int, reason: str) -> Optional[EjectionEvent]:
        """A failure the router saw on the request path that ejects at once (a connection refused, or its own count
        of consecutive failures): the same ejection, backoff and cap as a tick's, decided here (one source of truth
        for ejection state). None when ``i`` is out already or the refusal was logged this episode. O(n)."""
        if self.until[i] is not None:
            return None
        if self.ejected_count >= self._cap:
            if self._refused[i]:
                return None
            self._refused[i] = True
            return EjectionEvent("eject_refused", i, f"{reason}; max ejected share reached",
                                 {"ejected": float(self.ejected_count), "cap": float(self._cap)})
        return self._eject(now, i, reason, {"source_request_path": 1.0})

    def _why(self, i: int, ok: int, latency_s: float, median_s: Optional[float], probation: bool = False) -> tuple:
        if self.streak[i] >= self._k_fail:
            return "consecutive failures", {"failures": float(self.streak[i])}
        if ok and median_s is not None and latency_s > max(self._factor * median_s, self._slo_s):
            return "latency outlier", {"latency_s": latency_s, "pool_median_s": median_s}
        if ok and probation and latency_s > self._slo_s:
            return "latency outlier (failed probation)", {"latency_s": latency_s, "slo_s": self._slo_s}
        return None, {}

    def _eject(self, now: float, i: int, reason: str, figures: Dict[str, float]) -> EjectionEvent:
        if now - self._ended[i] > self._max_s:
            self.ejections[i] = 0
        self.ejections[i] += 1
        duration = min(self._base_s * 2 ** (self.ejections[i] - 1), self._max_s)
        self.until[i] = now + duration
        self._refused[i] = False
        self.cause[i] = "latency" if reason.startswith("latency") else "failure"
        self._ejected_at[i] = now
        self._down_seen[i] = False
        self._down_at[i] = -math.inf
        self._unreached[i] = reason == "connection failure"
        self.probation_until[i] = None
        return EjectionEvent("eject", i, reason, dict(figures, ejection=self.ejections[i], backoff_s=duration))

    def readmit_due(self, now: float) -> List[EjectionEvent]:
        """Readmit the endpoints whose backoff has ended (a latency ejection's with probation). O(n)."""
        events = []
        for i, until in enumerate(self.until):
            if until is not None and now >= until:
                probation = self.cause[i] == "latency"
                figures = {"ejections": float(self.ejections[i])}
                if probation:
                    figures["probation_s"] = self.probation_s
                events.append(self._end(now, i, "backoff over" + (", on probation" if probation else ""), figures))
                if probation:
                    self.probation_until[i] = now + self.probation_s
                    self._tried[i] = False
        return events

    def _end(self, now: float, i: int, reason: str, figures: Dict[str, float]) -> EjectionEvent:
        self.until[i] = None
        self._ended[i] = now
        self.streak[i] = 0
        self.cause[i] = None
        self._down_seen[i] = False
        return EjectionEvent("readmit", i, reason, figures)


def _miss_shares(ok: Sequence[int], over_slo: Sequence[int]) -> List[float]:
    return [min(1.0, o / k) if k > 0 else math.nan for k, o in zip(ok, over_slo)]


def _pool_medians(values: Sequence[float], groups: Mapping[str, Sequence[int]],
                  positive: bool = True) -> Dict[str, float]:
    """Per pool (``groups``: its endpoints' indexes), the median of its measured values (not NaN; > 0 when
    ``positive``), where at least 3 are measured."""
    out: Dict[str, float] = {}
    for pool, members in groups.items():
        measured = [x for x in map(values.__getitem__, members) if x == x and (x > 0.0 or not positive)]
        if len(measured) >= 3:
            out[pool] = statistics.median(measured)
    return out


def _groups(pools: Sequence[str]) -> Dict[str, List[int]]:
    groups: Dict[str, List[int]] = {}
    for i, pool in enumerate(pools):
        groups.setdefault(pool, []).append(i)
    return groups
