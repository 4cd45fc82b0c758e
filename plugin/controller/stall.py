"""Stall watch: an endpoint that stopped answering while our requests wait on it is ejected between ticks.

A tick sees a slowed endpoint only when its slow answers come back (one interval or more after the slow-down);
until then every request routed there is already late. Between ticks the loop looks at the dispatchers' counters
every ``WATCH_PERIOD_S``, beside the newest Triton scrape of each endpoint:

    silence_i = now - max(start_i, lead_at_i)
        start_i   = the last time i's completed count (successes + failures, over every dispatcher) changed, or i
                    had nothing of ours in flight
        lead_at_i = when the server was last seen serving other clients' queue ahead of ours (below; -inf if not)
    stalled   : in_flight_i >= 1 and silence_i > limit_i
    limit_i   = max(STALL_FACTOR x usual_i, usual_i + STALL_SLACK_S, SLO - usual_i) + wait_i + report_cadence_s
    wait_i    = ahead_i / x_i   (the others' queue ahead of our request drained at the server's rate; 0 when
                                 ahead_i < 1 or x_i = 0)
        ahead_i = pending_i - max(in_flight_i, ours_N_i): the requests of other clients at the server, from its
                  newest sample N_i (Triton's pending request count) less ours, all counted as queued (the cautious
                  side), now and when N_i was first seen (within a look of its scrape: our own queue that has
                  drained since is not read as theirs)
        x_i     = (success_N - success_P) / (N.at_s - P.at_s): the server's completions per second, all clients
                  (= C / s while its C slots are busy, which they are while requests wait: pending / C x s), P_i
                  the sample before N_i
        lead_at_i = N.at_s when ahead_i >= 1 and x_i > 0: the server was alive then, serving that queue
With one client the server's queue is ours (ahead = 0): the rule is the bare silence. With many, a request of ours
queued behind the others' is given the time the queue ahead of it takes; a server that stopped (SIGSTOP, a hung
model) stops advancing its success counter and its scrapes stop landing, so N_i stays the last sample before it
stopped: it is judged stalled at most wait_i after the bare rule would (the queue it held could not be told apart).

usual_i is endpoint i's usual latency: the smallest of the dispatchers' EWMA latencies of i, followed at once
when it falls and with a time constant of USUAL_TAU_S when it rises (NaN: no success yet, never judged). The slow
rise matters after a stall: the answers that finally come back inflate the EWMA, and an endpoint readmitted on
probation that is still stalled must be judged by what it used to take, not by its stall (its trial requests
would each wait out the inflated limit, and miss the SLO). For the same reason it is not updated at all while the
endpoint is ejected or on probation (``frozen``). The SLO term keeps an endpoint that is slower but still answers
within the SLO (a 3x slow-down of a fast one) in the fleet: the silence must be long enough that a request sent now
would not answer in time. Our own queue does not trip it: completions keep coming every s / C however long the
queue, and a latency already includes the queue wait. What trips it is an endpoint whose slots all hold requests
far longer than it ever took: a 10x slow-down, a hung model, a half-open connection. ``report_cadence_s``: the
counters arrive in reports this far apart (a controller over client reports), so a silence that short says
nothing. The ejection goes through the outlier detector as a latency ejection (``OutlierDetector.report``): its
backoff, cap and probation apply as to any other.
O(dispatchers x n) per look.
"""
from __future__ import annotations

import math
from typing import Container, Iterable, List, Optional, Sequence, Tuple

from ..request.baseline import USUAL_TAU_S, UsualLatency
from .signals import TritonSample

__all__ = ["StallWatch", "WATCH_PERIOD_S", "STALL_FACTOR", "STALL_SLACK_S", "USUAL_TAU_S"]

#: how often the loop looks (s)
WATCH_PERIOD_S = 0.05
#: silence longer than this many EWMA latencies, and ...
STALL_FACTOR = 2.0
#: ... longer than the EWMA latency plus this (s): a fast endpoint's single slow request is no stall (the capacity
#: estimator's stall rule, ``estimators``, uses the same slack over two service times)
STALL_SLACK_S = 0.05


class StallWatch:
    """Per endpoint: the completed count last seen and when it last changed, and the server's two newest samples."""

    def __init__(self, n: int, factor: float = STALL_FACTOR, slack_s: float = STALL_SLACK_S,
                 slo_s: float = 0.0, report_cadence_s: float = 0.0) -> None:
        self.n = n
        self.slo_s = slo_s
        self.factor = factor
        self.slack_s = slack_s
        self.report_cadence_s = report_cadence_s
        self._done = [-1] * n
        self._since = [math.inf] * n
        self._usual = UsualLatency(n, USUAL_TAU_S)
        self._newest: List[Optional[TritonSample]] = [None] * n
        self._before: List[Optional[TritonSample]] = [None] * n
        self._ours_then = [0] * n

    def look(self, now: float, stats: Iterable[object], frozen: Container[int] = (),
             samples: Sequence[Optional[TritonSample]] = ()) -> List[Tuple[int, str]]:
        """Stalled endpoints with the reason to log, given every dispatcher's ``DispatchStats`` and the newest
        Triton sample per endpoint (None or none given: no server view); the usual latency of the endpoints in
        ``frozen`` (ejected, on probation) is left as it was."""
        n = self.n
        in_flight, done, ewma = [0] * n, [0] * n, [math.inf] * n
        for s in stats:
            for i in range(n):
                in_flight[i] += s.in_flight[i]  # type: ignore[attr-defined]
                done[i] += s.successes[i] + s.failures[i]  # type: ignore[attr-defined]
                e = s.ewma_latency_s[i]  # type: ignore[attr-defined]
                if e == e and e < ewma[i]:
                    ewma[i] = e
        for i, sample in enumerate(samples):
            self._keep(i, sample, in_flight[i])
        usual = self._usual.update(now, ewma, frozen)
        out: List[Tuple[int, str]] = []
        for i in range(n):
            if done[i] != self._done[i] or in_flight[i] == 0:
                self._done[i] = done[i]
                self._since[i] = now
                continue
            u = usual[i]
            if not u == u:
                continue
            ahead, wait_s, lead_at = self._queue_ahead(i, in_flight[i])
            silence = now - max(self._since[i], lead_at)
            limit = max(self.factor * u, u + self.slack_s, self.slo_s - u) + wait_s + self.report_cadence_s
            if silence > limit:
                queue = f", {ahead:.0f} of other clients queued ahead ({wait_s:.2f} s)" if wait_s > 0.0 else ""
                out.append((i, f"latency outlier (stalled: no answer for {silence:.2f} s with {in_flight[i]} in "
                               f"flight, usual latency {u:.3f} s{queue})"))
                self._since[i] = now  # judged once per silence: the detector's backoff takes it from here
        return out

    def _keep(self, i: int, sample: Optional[TritonSample], ours: int) -> None:
        """Keep the newest two samples with metrics of endpoint i, and our in-flight when the newest came."""
        newest = self._newest[i]
        if sample is None or not sample.has_metrics or (newest is not None and sample.at_s <= newest.at_s):
            return
        self._before[i], self._newest[i], self._ours_then[i] = newest, sample, ours

    def _queue_ahead(self, i: int, ours: int) -> Tuple[float, float, float]:
        """(ahead_i, wait_i, lead_at_i) of the module docstring; (0, 0, -inf) without two samples or progress."""
        new, old = self._newest[i], self._before[i]
        if new is None or old is None:
            return 0.0, 0.0, -math.inf
        rate = (new.success - old.success) / (new.at_s - old.at_s)
        ahead = new.pending - max(ours, self._ours_then[i])
        if not (ahead >= 1.0 and rate > 0.0):
            return 0.0, 0.0, -math.inf
        return ahead, ahead / rate, new.at_s

    @property
    def usual(self) -> List[float]:
        """The usual latency per endpoint (``tritonmix.request.baseline``); NaN until it has a success."""
        return self._usual.values
