"""Turn cumulative counters (router, dispatchers, Triton scrapes) into one interval's per-endpoint observations."""
from __future__ import annotations

import math
import operator
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..request.slots import SlotArrays
from .estimators import CapacityObservation
from .signals import TritonSample

__all__ = ["EndpointTick", "Deltas", "Shares", "dispatcher_totals"]


class EndpointTick(NamedTuple):
    """One endpoint over one tick: our deltas, our in-flight and latency, the server's deltas when scraped."""

    ok: int
    over_slo: int
    failed: int
    in_flight: int
    latency_s: float                  # our EWMA latency (success-weighted mean over the dispatchers); NaN unknown
    capacity: CapacityObservation
    external_rps: float               # the server's throughput minus ours (other clients), >= 0
    stale_s: float                    # age of the newest Triton sample (inf: never scraped)
    ready: Optional[bool]


def dispatcher_totals(stats: Sequence[object], n: int) -> Tuple[List[int], List[float]]:
    """Per endpoint: in-flight summed over the dispatchers, EWMA latency averaged weighted by successes."""
    in_flight = [0] * n
    lat_sum = [0.0] * n
    lat_w = [0.0] * n
    for s in stats:  # a router that grew since the controller followed it has more slots: the first n count
        for i, f, ok, lat in zip(range(n), s.in_flight, s.successes, s.ewma_latency_s):  # type: ignore[attr-defined]
            in_flight[i] += f
            if lat == lat and ok:
                lat_sum[i] += lat * ok
                lat_w[i] += ok
    return in_flight, [lat_sum[i] / lat_w[i] if lat_w[i] else math.nan for i in range(n)]


#: external load: EWMA weight of one scrape's signed difference, and the noise floor subtracted from the mean
EXTERNAL_ALPHA = 0.15
EXTERNAL_NOISE_RPS = 1.0


class Deltas(SlotArrays):
    """Remembers the last cumulative values and returns per-interval differences (a counter that went down, as a
    restarted server's does, counts from 0).

    External load (other clients) per endpoint, from windows that do not line up (the server's scrape-to-scrape
    span, our tick), so one interval's difference is mostly timing noise of either sign:
        d        = server_done / span - ours_ok / dt                 (signed: never clipped before averaging)
        ext~    <- ext~ + EXTERNAL_ALPHA (d - ext~)                  (per fresh scrape)
        external = max(0, ext~ - EXTERNAL_NOISE_RPS)
    Clipping each interval at 0 before averaging (as a naive max(0, d) does) turns the noise of a single client
    into phantom external load that empties the cheapest endpoint's room on every other tick."""

    SLOTS = {"_counters": (0, 0, 0), "_samples": None, "_external": 0.0}

    def __init__(self, n: int) -> None:
        self._counters: List[Tuple[int, int, int]] = [(0, 0, 0)] * n
        self._samples: List[Optional[TritonSample]] = [None] * n
        self._external = [0.0] * n

    def tick(self, now: float, dt_s: float, counters: Sequence[Tuple[int, int, int]],
             samples: Sequence[Optional[TritonSample]], in_flight: Sequence[int], latency_s: Sequence[float],
             capacity: bool = True) -> List[EndpointTick]:
        """One tick per endpoint. ``capacity=False``: counts, readiness and staleness only (the endpoint-level pass
        when capacity is observed per model: ``capacity`` is then an empty observation, ``external_rps`` 0).
        O(n) in one loop without a call per endpoint unless a fresh scrape is read (``_server_view``): it runs at
        every tick for every endpoint and model."""
        out: List[EndpointTick] = []
        append, new, nan = out.append, tuple.__new__, math.nan
        last, seen, external = self._counters, self._samples, self._external
        for i, (ok, over, failed) in enumerate(counters):
            ok0, over0, failed0 = last[i]
            last[i] = (ok, over, failed)
            if ok >= ok0:  # a counter that went down (restarted server) counts from 0
                ok -= ok0
            if over >= over0:
                over -= over0
            if failed >= failed0:
                failed -= failed0
            sample = samples[i]
            stale_s, ready = (math.inf, None) if sample is None else (now - sample.at_s, sample.ready)
            if not capacity:
                append(new(EndpointTick, (ok, over, failed, in_flight[i], latency_s[i], _EMPTY, 0.0, stale_s, ready)))
                continue
            flight, latency = in_flight[i], latency_s[i]
            if sample is not None and sample.has_metrics:
                prev = seen[i]
                fresh = prev is None or sample.at_s > prev.at_s
                if fresh and prev is not None and prev.has_metrics:
                    cap, diff = _server_view(sample, prev, dt_s, ok, over, flight, latency if ok else nan)
                    external[i] += EXTERNAL_ALPHA * (diff - external[i])
                else:
                    cap = new(CapacityObservation, (dt_s, ok, nan, nan, nan, flight, ok, over))
                if fresh:
                    seen[i] = sample
            else:
                # without server metrics our own latency stands in for the service time (it includes queueing:
                # conservative)
                cap = new(CapacityObservation, (dt_s, ok, latency if ok else nan, nan, nan, flight, ok, over))
            ext = external[i] - EXTERNAL_NOISE_RPS
            append(new(EndpointTick, (ok, over, failed, flight, latency, cap, ext if ext > 0.0 else 0.0, stale_s,
                                      ready)))
        return out


_EMPTY = CapacityObservation(dt_s=0.0)
#: columns of a list of EndpointTicks, read in C (``map``) where a tick sums one over every endpoint
_OK, _OVER_SLO, _FAILED = (operator.attrgetter(name) for name in ("ok", "over_slo", "failed"))


def _server_view(new: TritonSample, old: TritonSample, dt_s: float, ok: int, over: int, in_flight: int,
                 own_latency_s: float) -> Tuple[CapacityObservation, float]:
    """Capacity observation from the server's counters over the scrape-to-scrape interval, and the signed
    external-load difference. A model that reports no compute time of its own (an ensemble: its steps report
    theirs) is timed by our latency instead."""
    span_s = max(new.at_s - old.at_s, 1e-6)
    done = _diff(new.success, old.success)
    if done <= 0:
        return CapacityObservation(dt_s, ok, math.nan, math.nan, new.pending, in_flight, ok, over), -ok / dt_s
    service_s = _diff(new.compute_us, old.compute_us) / done / 1e6
    queue_s = _diff(new.queue_us, old.queue_us) / done / 1e6
    cap = CapacityObservation(span_s, int(done), service_s if service_s > 0 else own_latency_s, queue_s, new.pending,
                              in_flight, ok, over)
    return cap, done / span_s - ok / dt_s


def _diff(new: float, old: float) -> float:
    d = new - old
    return d if d >= 0 else new


class Shares:
    """Fleet-wide SLO miss share and error share over a sliding window (EWMA of the per-tick counts):

        ok~ <- ok~ + a (ok - ok~)   (same for over_slo~, failed~), a = 0.3 (about 3 ticks)
        miss_share = over_slo~ / ok~,  error_share = failed~ / (ok~ + failed~)
    NaN while the window holds fewer than ``min_requests`` requests (ok~ / a < min_requests): a handful of
    completions says nothing about a 5% threshold. ``failed`` counts only the endpoints still routable at the tick
    (``update``'s ``routable``): the failed attempts of one that is down or ejected now are that event's, which the
    Decider judges by the room the others leave (a frozen endpoint's held attempts, cancelled and sent elsewhere,
    are not a second, fleet-wide signal of the same fault).
    """

    def __init__(self, alpha: float = 0.3, min_requests: int = 30) -> None:
        self._a = alpha
        self._min = min_requests
        self._ok = self._over = self._failed = 0.0

    def update(self, ticks: Sequence[EndpointTick], routable: Optional[Sequence[bool]] = None) -> Dict[str, float]:
        """``routable``: per endpoint, routable now (None: all); the failures of the others are left out."""
        a = self._a
        self._ok += a * (sum(map(_OK, ticks)) - self._ok)
        self._over += a * (sum(map(_OVER_SLO, ticks)) - self._over)
        failed = (sum(map(_FAILED, ticks)) if routable is None else
                  sum([t.failed for i, t in enumerate(ticks) if i >= len(routable) or routable[i]]))
        self._failed += a * (failed - self._failed)
        ok, failed = self._ok, self._failed
        return {"miss_share": self._over / ok if ok / a >= self._min else math.nan,
                "error_share": failed / (ok + failed) if (ok + failed) / a >= self._min else math.nan}
