"""Stall watch: an endpoint that stopped answering while our requests wait on it is ejected between ticks.

A tick sees a slowed endpoint only when its slow answers come back (one interval or more after the slow-down);
until then every request routed there is already late. Between ticks the loop looks at the dispatchers' counters
every ``WATCH_PERIOD_S``, beside the newest Triton scrape of each endpoint:

    silence_i = now - max(start_i, alive_i)
        start_i   = the last time i's answered count (successes + failures, over every dispatcher, less the
                    attempts we cancelled: a hedge's loser is no answer) changed, or i had nothing of ours waiting:
                    nothing in flight and no overdue attempt cancelled since its last answer (a request whose hedge
                    won elsewhere was still not answered by i)
        alive_i   = N_i.at_s when the server is seen serving other clients (crowd_i, below) and its newest sample
                    N_i shows completions since the one before, P_i; else -inf
    stalled   : waiting_i >= 1 and silence_i > limit_i
    waiting_i = in_flight_i + the overdue attempts on i cancelled since its last answer: those seen cancelled at a
                look when i had been silent for more than usual_i + WATCH_PERIOD_S + report_cadence_s (the
                silence starts at the last look that saw nothing waiting, up to a look period before the attempt
                left, and the counts arrive that late; an original whose hedge won elsewhere had been
                out for the hedge delay, longer than usual_i, with no answer from i); an attempt cancelled
                sooner (a hedge's copy sent to i, cancelled when the original answered elsewhere; over gRPC the
                server stops it) was owed nothing yet and says nothing about i: counting it as waiting would
                keep the silence of an idle endpoint running, and eject a healthy one whose only traffic was
                copies that lost
    limit_i   = max(STALL_FACTOR x usual_i, usual_i + STALL_SLACK_S, SLO - usual_i) + grace_i + report_cadence_s
    grace_i   = max(scrape_period_s, ahead_i / x_i, QUEUE_TAIL x q_i) when alive_i, else 0
        scrape_period_s  the next scrape is due that long after N_i: until then the server is presumed to keep
                         serving as N_i showed (ours is one of many requests there: the silence between two of
                         our answers is no sign of a stall, the server's progress is)
        ahead_i / x_i    the other clients' queue ahead of ours drained at the server's rate:
                         ahead_i = pending_N - max(in_flight_i, ours when N_i was first seen), our requests all
                         counted as queued and our own queue that has drained since not read as theirs;
                         x_i = (success_N - success_P) / (N.at_s - P.at_s), all clients (= C / s while its C slots
                         are busy, which they are while requests wait: pending / C x s)
        QUEUE_TAIL x q_i the tail of the server's queue wait, q_i = (queue_us_N - queue_us_P) / (success_N -
                         success_P) its mean per request over the span (a queue that comes and goes between scrapes)
    crowd_i   : over the last CROWD_SPANS scrape-to-scrape spans the server completed more than we did, by more than
                CROWD_SLACK + CROWD_SHARE x its completions (our completed count is read at the look that first
                saw each sample; the slack covers a completion of ours in between)
With one client the server's completions are ours (no crowd): the rule is the bare silence, exactly as fast as
without a server view. With many, our requests answer a share of the server's completions only, so the silence
between two of ours says little: a request of ours queued behind the others' is given the server's word instead.
A server that stops (SIGSTOP, a hung model) stops advancing its success counter: the first scrape that shows it (a
hung model) or the scrape that does not land (SIGSTOP: N_i stays the last before it stopped) ends the grace, and
the endpoint is judged stalled at most max(scrape_period_s, ahead_i / x_i, QUEUE_TAIL x q_i) after the bare rule
would have (a crowd's queue cannot be told from a stop any sooner).

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
nothing. ``scrape_period_s``: how far apart the scrapes land (the loop's interval: one scrape per tick). The
ejection goes through the outlier detector as a latency ejection (``OutlierDetector.report``): its
backoff, cap and probation apply as to any other.
O(dispatchers x n) per look.
"""
from __future__ import annotations

import collections
import math
from typing import Container, Deque, Iterable, List, Optional, Sequence, Tuple

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
#: a request of ours may wait this many of the server's mean queue waits (the wait tail of a queue that comes and
#: goes: exponential-like, P(W > 4 q) ~ e^-4 of those that wait)
QUEUE_TAIL = 4.0
#: the server serves other clients when, over its last CROWD_SPANS scrape-to-scrape spans, its completions exceed
#: ours by more than CROWD_SLACK + CROWD_SHARE x its completions (the slack: a completion of ours between a scrape
#: and the look that saw it). 0.5: a single completion by another client is a crowd, so that a lightly used one-slot
#: endpoint (one or two completions per window) counts as shared and a request of ours queued behind one other is
#: given the server's word
CROWD_SPANS = 4
CROWD_SLACK = 0.5
CROWD_SHARE = 0.1


class StallWatch:
    """Per endpoint: the completed count last seen and when it last changed, and the server's two newest samples."""

    def __init__(self, n: int, factor: float = STALL_FACTOR, slack_s: float = STALL_SLACK_S,
                 slo_s: float = 0.0, report_cadence_s: float = 0.0, scrape_period_s: float = 0.0) -> None:
        """``report_cadence_s``, ``scrape_period_s``: see the module docstring (0: none)."""
        self.n = n
        self.scrape_period_s = scrape_period_s
        self.slo_s = slo_s
        self.factor = factor
        self.slack_s = slack_s
        self.report_cadence_s = report_cadence_s
        #: how much longer than the usual latency a silence can be while nothing was owed yet (``waiting_i``)
        self._look_slack_s = WATCH_PERIOD_S + report_cadence_s
        self._done = [-1] * n
        self._since = [math.inf] * n
        #: per endpoint, the cancelled attempts counted at its last answer (those since are still waiting on it)
        self._cancelled_at = [0] * n
        self._usual = UsualLatency(n, USUAL_TAU_S)
        #: per endpoint, its newest samples with metrics (oldest first, CROWD_SPANS + 1 at most), each with our
        #: in-flight and completed counts at the look that first saw it
        self._seen: List[Deque[Tuple[TritonSample, int, int]]] = [collections.deque(maxlen=CROWD_SPANS + 1)
                                                                   for _ in range(n)]

    def follow(self, n: int, reset: Sequence[int]) -> None:
        """Slots up to ``n``; fresh state (no usual latency, no samples) for ``reset``."""
        for i in range(self.n, n):
            self._done.append(-1)
            self._since.append(math.inf)
            self._cancelled_at.append(0)
            self._usual.values.append(math.nan)
            self._seen.append(collections.deque(maxlen=CROWD_SPANS + 1))
        self.n = max(self.n, n)
        for i in reset:
            self._done[i], self._since[i], self._usual.values[i] = -1, math.inf, math.nan
            self._cancelled_at[i] = 0
            self._seen[i] = collections.deque(maxlen=CROWD_SPANS + 1)

    def look(self, now: float, stats: Iterable[object], frozen: Container[int] = (),
             samples: Sequence[Optional[TritonSample]] = (), abandoned: Sequence[int] = ()) -> List[Tuple[int, str]]:
        """Stalled endpoints with the reason to log, given every dispatcher's ``DispatchStats`` and the newest
        Triton sample per endpoint (None or none given: no server view); the usual latency of the endpoints in
        ``frozen`` (ejected, on probation) is left as it was. ``abandoned``: per endpoint, the attempts among the
        successes that ended because we cancelled them (``Router.stall_view``, read with the stats)."""
        n = self.n
        cancelled = list(abandoned[:n]) + [0] * (n - len(abandoned[:n]))
        in_flight, done, ewma = [0] * n, [-k for k in cancelled], [math.inf] * n
        for s in stats:
            for i in range(n):
                in_flight[i] += s.in_flight[i]  # type: ignore[attr-defined]
                done[i] += s.successes[i] + s.failures[i]  # type: ignore[attr-defined]
                e = s.ewma_latency_s[i]  # type: ignore[attr-defined]
                if e == e and e < ewma[i]:
                    ewma[i] = e
        for i, sample in enumerate(samples):
            self._keep(i, sample, in_flight[i], done[i])
        usual = self._usual.update(now, ewma, frozen)
        out: List[Tuple[int, str]] = []
        for i in range(n):
            if done[i] != self._done[i] or cancelled[i] < self._cancelled_at[i]:  # an answer (or the slot reused)
                self._done[i], self._cancelled_at[i] = done[i], cancelled[i]
                self._since[i] = now
                continue
            u = usual[i]
            if cancelled[i] > self._cancelled_at[i] and not now - self._since[i] > u + self._look_slack_s:
                self._cancelled_at[i] = cancelled[i]  # cancelled before i owed an answer: no evidence either way
            waiting = in_flight[i] + cancelled[i] - self._cancelled_at[i]
            if waiting == 0:
                self._since[i] = now
                continue
            if not u == u:
                continue
            ahead, grace_s, alive_at = self._crowd(i, in_flight[i])
            silence = now - max(self._since[i], alive_at)
            limit = max(self.factor * u, u + self.slack_s, self.slo_s - u) + grace_s + self.report_cadence_s
            if silence > limit:
                queue = (f", the server last seen serving other clients ({ahead:.0f} queued ahead) "
                         f"{now - alive_at:.2f} s ago") if alive_at > -math.inf else ""
                out.append((i, f"latency outlier (stalled: no answer for {silence:.2f} s with {in_flight[i]} in "
                               f"flight and {waiting - in_flight[i]} cancelled unanswered, usual latency {u:.3f} s"
                               f"{queue})"))
                self._since[i] = now  # judged once per silence: the detector's backoff takes it from here
        return out

    def _keep(self, i: int, sample: Optional[TritonSample], ours: int, done: int) -> None:
        """Keep a new sample with metrics of endpoint i, with our in-flight and completed counts now."""
        seen = self._seen[i]
        if sample is None or not sample.has_metrics or (seen and sample.at_s <= seen[-1][0].at_s):
            return
        seen.append((sample, ours, done))

    def _crowd(self, i: int, ours: int) -> Tuple[float, float, float]:
        """(ahead_i, grace_i, alive_i) of the module docstring; (0, 0, -inf) with no crowd or no progress."""
        seen = self._seen[i]
        if len(seen) < 2:
            return 0.0, 0.0, -math.inf
        (first, _, done_first), (old, _, _), (new, ours_then, done_new) = seen[0], seen[-2], seen[-1]
        window = new.success - first.success
        if not window - (done_new - done_first) > CROWD_SLACK + CROWD_SHARE * window:
            return 0.0, 0.0, -math.inf
        served = new.success - old.success
        if not served > 0.0:
            return 0.0, 0.0, -math.inf
        ahead = max(0.0, new.pending - max(ours, ours_then))
        drain_s = ahead * (new.at_s - old.at_s) / served
        queued_s = (new.queue_us - old.queue_us) / 1e6 / served
        grace_s = max(self.scrape_period_s, drain_s, QUEUE_TAIL * queued_s if queued_s > 0.0 else 0.0)
        return ahead, grace_s, new.at_s

    @property
    def usual(self) -> List[float]:
        """The usual latency per endpoint (``tritonmix.request.baseline``); NaN until it has a success."""
        return self._usual.values
