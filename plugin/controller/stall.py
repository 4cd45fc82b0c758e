"""Stall watch: an endpoint that stopped answering while our requests wait on it is ejected between ticks.

A tick sees a slowed endpoint only when its slow answers come back (one interval or more after the slow-down);
until then every request routed there is already late. Between ticks the loop looks at the dispatchers' counters
every ``WATCH_PERIOD_S``:

    silence_i = now - (the last time i's completed count (successes + failures, over every dispatcher) changed,
                       or i had nothing of ours in flight)
    stalled   : in_flight_i >= 1 and silence_i > max(STALL_FACTOR x usual_i, usual_i + STALL_SLACK_S, SLO - usual_i)

with usual_i endpoint i's usual latency: the smallest of the dispatchers' EWMA latencies of i, followed at once
when it falls and with a time constant of USUAL_TAU_S when it rises (NaN: no success yet, never judged). The slow
rise matters after a stall: the answers that finally come back inflate the EWMA, and an endpoint readmitted on
probation that is still stalled must be judged by what it used to take, not by its stall (its trial requests
would each wait out the inflated limit, and miss the SLO). For the same reason it is not updated at all while the
endpoint is ejected or on probation (``frozen``). The SLO term keeps an endpoint that is slower but still answers within the SLO (a 3x slow-down of a
fast one) in the fleet: the silence must be long enough that a request sent now would not answer in time. A queue
does not trip it: completions keep coming every s / C however long the queue, and a
latency already includes the queue wait. What trips it is an endpoint whose slots all hold requests far longer than
it ever took: a 10x slow-down, a hung model, a half-open connection. The ejection goes through the outlier detector
as a latency ejection (``OutlierDetector.report``): its backoff, cap and probation apply as to any other.
O(dispatchers x n) per look.
"""
from __future__ import annotations

import math
from typing import Container, Iterable, List, Tuple

from ..request.baseline import USUAL_TAU_S, UsualLatency

__all__ = ["StallWatch", "WATCH_PERIOD_S", "STALL_FACTOR", "STALL_SLACK_S", "USUAL_TAU_S"]

#: how often the loop looks (s)
WATCH_PERIOD_S = 0.05
#: silence longer than this many EWMA latencies, and ...
STALL_FACTOR = 2.0
#: ... longer than the EWMA latency plus this (s): a fast endpoint's single slow request is no stall (the capacity
#: estimator's stall rule, ``estimators``, uses the same slack over two service times)
STALL_SLACK_S = 0.05


class StallWatch:
    """Per endpoint: the completed count last seen and when it last changed."""

    def __init__(self, n: int, factor: float = STALL_FACTOR, slack_s: float = STALL_SLACK_S,
                 slo_s: float = 0.0) -> None:
        self.n = n
        self.slo_s = slo_s
        self.factor = factor
        self.slack_s = slack_s
        self._done = [-1] * n
        self._since = [math.inf] * n
        self._usual = UsualLatency(n, USUAL_TAU_S)

    def look(self, now: float, stats: Iterable[object], frozen: Container[int] = ()) -> List[Tuple[int, str]]:
        """Stalled endpoints with the reason to log, given every dispatcher's ``DispatchStats``; the usual latency
        of the endpoints in ``frozen`` (ejected, on probation) is left as it was."""
        n = self.n
        in_flight, done, ewma = [0] * n, [0] * n, [math.inf] * n
        for s in stats:
            for i in range(n):
                in_flight[i] += s.in_flight[i]  # type: ignore[attr-defined]
                done[i] += s.successes[i] + s.failures[i]  # type: ignore[attr-defined]
                e = s.ewma_latency_s[i]  # type: ignore[attr-defined]
                if e == e and e < ewma[i]:
                    ewma[i] = e
        usual = self._usual.update(now, ewma, frozen)
        out: List[Tuple[int, str]] = []
        for i in range(n):
            if done[i] != self._done[i] or in_flight[i] == 0:
                self._done[i] = done[i]
                self._since[i] = now
                continue
            silence, u = now - self._since[i], usual[i]
            if not u == u:
                continue
            limit = max(self.factor * u, u + self.slack_s, self.slo_s - u)
            if silence > limit:
                out.append((i, f"latency outlier (stalled: no answer for {silence:.2f} s with {in_flight[i]} in "
                               f"flight, usual latency {u:.3f} s)"))
                self._since[i] = now  # judged once per silence: the detector's backoff takes it from here
        return out

    @property
    def usual(self) -> List[float]:
        """The usual latency per endpoint (``tritonmix.request.baseline``); NaN until it has a success."""
        return self._usual.values
