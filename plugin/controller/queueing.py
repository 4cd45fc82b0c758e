"""How hot an endpoint may run and still answer within the SLO: the largest slot utilisation at which a request's
queue wait stays under the SLO's slack with probability >= 1 - ``QUEUE_MISS_TARGET``.

A pool of c slots with service time s (nearly constant: one model, one shape) fed by Poisson arrivals is an M/D/c
queue. Its wait tail is taken from M/M/c (Erlang C) with the conditional wait halved, the Allen-Cunneen correction
for deterministic service (squared coefficient of variation ~0):

    c >= 2:  P(W > t) ~= ErlangC(c, a) * exp(-t * c (1 - rho) / (s * k)),   a = rho c,  k = (1 + cs^2) / 2 = 0.5
    c  = 1:  P(W > t) ~= sqrt(rho) * exp(-theta t),  theta the Cramer root of rho (e^(theta s) - 1) = theta s
             (M/D/1's exact decay rate; the Allen-Cunneen form is 40% too cautious for one slot, and one-slot
             endpoints are common: a GPU serving one image at a time)
    u_slo(c, s, SLO) = max rho in [0, 1] with P(W > SLO - s) <= QUEUE_MISS_TARGET          (bisection)

Checked against a discrete-event M/D/c simulation with 5% service jitter (``tests/test_controller_queueing.py``):
at a 1% target the simulated share of waits over the slack is 0.6-0.8% for c in 2..8 and 0.9-1.0% for c = 1
(s / SLO in 0.1..0.45: slightly conservative); at the 5% target used here it is 3-5.5% (about on target). One
slot queues long: a pool cut to one slot and planned at 80% load missed the SLO for ~15% of its requests.

Results are cached per (c, s / SLO rounded to 0.001): O(1) per endpoint per tick after the first.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

__all__ = ["QUEUE_MISS_TARGET", "UNLIMITED_MISS_TARGET", "LIMIT_SLO_SHARE", "erlang_c", "wait_tail", "slo_utilisation", "slo_utilisations", "inflight_limit",
           "effective_limit"]

#: share of requests that may find the queue past the SLO's slack at the planned load. Those requests do not miss:
#: the dispatcher's in-flight limit (``inflight_limit``) sends them to another endpoint as the queue builds, so
#: the plan may run an endpoint this hot. With 1% (no limits) the quick scenario spent twice as long in CAPACITY
#: mode for the same SLO attainment.
QUEUE_MISS_TARGET = 0.05
#: Allen-Cunneen factor (1 + cs^2) / 2 for near-constant service times
_VARIATION = 0.5
_BISECTIONS = 24
#: the same where no in-flight limit spills the tail: a control plane's many followers (the 1% the note above
#: measured without limits)
UNLIMITED_MISS_TARGET = 0.01
_cache: Dict[Tuple[int, int, float], float] = {}


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lambda s < c (Erlang B by recurrence, then C)."""
    if a <= 0.0:
        return 0.0
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho + rho * b)


def cramer_root(rho: float) -> float:
    """x = theta s > 0 with rho (e^x - 1) = x, for 0 < rho < 1 (bisection; the function is convex, negative
    between 0 and the root)."""
    lo, hi = 1e-12, 1.0
    while rho * math.expm1(hi) - hi < 0.0:
        hi *= 2.0
        if hi > 1e3:
            return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if rho * math.expm1(mid) - mid < 0.0:
            lo = mid
        else:
            hi = mid
    return lo


def wait_tail(c: int, rho: float, slack_over_s: float) -> float:
    """P(W > slack) for c slots at utilisation rho, slack in units of the service time (formulas above)."""
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    if c == 1:
        return math.sqrt(rho) * math.exp(-cramer_root(rho) * slack_over_s)
    return erlang_c(c, rho * c) * math.exp(-slack_over_s * c * (1.0 - rho) / _VARIATION)


def slo_utilisation(slots: float, service_s: float, slo_s: float, target: float = QUEUE_MISS_TARGET) -> float:
    """u_slo for ``slots`` (rounded down, at least 1) and ``service_s``; 1.0 when either is unknown (NaN) or the
    SLO is not positive, 0.0 when the service time alone reaches the SLO. ``target``: the share of waits allowed
    past the slack (QUEUE_MISS_TARGET where in-flight limits spill the rest; UNLIMITED_MISS_TARGET where they
    cannot: many clients, each holding a sliver of an endpoint's limit)."""
    if not (service_s > 0.0 and slo_s > 0.0 and slots > 0.0):
        return 1.0
    ratio = service_s / slo_s
    if ratio >= 1.0:
        return 0.0
    c = max(1, int(slots + 1e-9))
    key = (c, int(round(ratio * 1000.0)), target)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    slack = (1.0 - key[1] / 1000.0) / max(key[1] / 1000.0, 1e-3)
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if wait_tail(c, mid, slack) <= target:
            lo = mid
        else:
            hi = mid
    if len(_cache) > 65536:
        _cache.clear()
    _cache[key] = lo
    return lo


def slo_utilisations(slots: Sequence[float], service_s: Sequence[float], slo_s: float,
                     targets: Sequence[float]) -> List[float]:
    """``slo_utilisation`` of every endpoint (slots, service time and target per endpoint), reading the cache
    without a call per endpoint: the views read it for every endpoint at every tick."""
    out: List[float] = []
    append, get = out.append, _cache.get
    for c, s, target in zip(slots, service_s, targets):
        if not (s > 0.0 and slo_s > 0.0 and c > 0.0):
            append(1.0)
            continue
        ratio = s / slo_s
        if ratio >= 1.0:
            append(0.0)
            continue
        cached = get((max(1, int(c + 1e-9)), int(round(ratio * 1000.0)), target))
        append(cached if cached is not None else slo_utilisation(c, s, slo_s, target))
    return out


#: the in-flight limit leaves this share of the SLO to the request that fills the last place (jitter, other clients)
LIMIT_SLO_SHARE = 0.9


def inflight_limit(slots: float, service_s: float, slo_s: float, share: float = LIMIT_SLO_SHARE) -> int:
    """How many requests of ours may be in flight at an endpoint before a new one would wait past the SLO:

        a request that finds n in flight on C slots waits for n - C + 1 completions at C / s each, so it answers
        within share x SLO when n <= C x share x SLO / s - 1;   limit = floor(C x share x SLO / s), at least 1

    0 (no limit) when the service time is unknown or reaches share x SLO (such an endpoint takes no interactive
    load in a plan). Other clients' requests at the server are not counted here (``effective_limit`` takes them
    off). The dispatcher overflows a full endpoint's picks to one under its limit (``Dispatcher.set_limits``), so
    a queue that builds between two ticks stops growing at once."""
    if not (service_s > 0.0 and slo_s > 0.0 and slots > 0.0) or service_s >= share * slo_s:
        return 0
    return max(1, int(slots * share * slo_s / service_s))


def effective_limit(limit: int, others: float) -> int:
    """The in-flight limit of one client at an endpoint whose server also holds ``others`` requests of other
    clients (its pending count less ours in flight, newest scrape):

        limit_eff = max(1, limit - floor(others))       (0, no limit, stays 0)
    ``limit`` places count every request at the server, whoever sent it: eight clients each at their own limit
    would queue eight times as deep. One place is always left, so that a crowded endpoint is still measured."""
    if limit <= 0 or not others >= 1.0:
        return limit
    return max(1, limit - int(others))
