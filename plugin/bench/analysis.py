"""From a policy's replay to its figures: SLO attainment, latency percentiles, errors, cost, settling times.

Cost model (the paper's "cost of inference" for an autoscaled pool): a request costs the price per second of the
accelerator that served it times its service time (one request per accelerator at a time), taken from the servers'
own busy-time counters (``tritonmix_emulated_service_us``, else ``nv_inference_compute_infer_duration_us``: see
``sampler``). Cost per 1,000 = total / successful x 1000.

Settling after an event on endpoint E, judged over the event's window (from the event to the next one, at most 5 s,
in 0.25 s bins). Traffic has settled at the first bin boundary T after which, to the end of the window, all of these
hold:

- E's share of the completions, over a centred 1 s window of the bins *inside* the event's window (no traffic from
  before the event leaks in), stays within ``band`` (0.15) of its share over the window's last second, plus one
  request's worth of share (1/n for the n requests of that 1 s window: one stray request, such as the controller's
  probe trickle, in a sparse second is no movement): the policy has stopped moving traffic on or off E;
- where the event took capacity away (a cut, a slow-down; ``units`` gives the pools' states), E's Triton queue (the
  pending-request gauge, the most seen in each bin, averaged over the same centred 1 s: a one-sample Poisson burst
  is no overload) stays within what the SLO absorbs at E's new capacity, ``floor(C' x (SLO - s') / s')`` requests
  for C' slots of service time s': the policy sends E no more than it can serve. A policy that never moves traffic off a cut pool never settles (its queue only grows), where a share alone
  would call it settled at once;
- no request arriving after T in the window failed (client-visible): traffic no longer goes to a dead endpoint.

``settle_s`` is T (None when the window ends first: not settled). Shares are of completions at the servers (what
Triton's counters give), so they lag the routing by the affected endpoint's service time: a policy that stopped
sending to a 3x slower trn1 at once still shows its last requests completing there up to ~0.4 s later. ``recovery_s`` is the time from the event to the
last request in the window that missed the SLO or failed (0 when none did).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .loadgen import RequestRecord
from .oracle import UnitState, unit_states_at
from .sampler import Sample
from .trace import Event

__all__ = ["policy_figures", "share_series", "pending_series", "settle_times", "queue_limit", "cost_per_1k"]

BIN_S = 0.25


def cost_per_1k(samples: Sequence[Sample], prices_per_hour: Mapping[str, float], successes: int) -> float:
    spent = sum(prices_per_hour[s.endpoint] / 3600.0 * s.busy_s for s in samples)
    return 1000.0 * spent / successes if successes else math.nan


def share_series(samples: Sequence[Sample], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints] of requests served per bin."""
    return _binned(samples, names, duration_s, lambda cell, s: cell + s.success + s.failure)


def pending_series(samples: Sequence[Sample], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints]: the most requests seen queued (Triton's pending gauge) in each bin."""
    return _binned(samples, names, duration_s, lambda cell, s: max(cell, s.pending))


def _binned(samples: Sequence[Sample], names: Sequence[str], duration_s: float,
            fold: Callable[[float, Sample], float]) -> np.ndarray:
    """Array [bins of BIN_S, endpoints], each cell ``fold``ed over the samples of its bin and endpoint from 0."""
    bins = int(math.ceil(duration_s / BIN_S)) + 1
    out = np.zeros((bins, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for s in samples:
        b, i = min(int(s.t_s / BIN_S), bins - 1), index[s.endpoint]
        out[b, i] = fold(out[b, i], s)
    return out


def smoothed_shares(counts: np.ndarray, width: int = 4) -> np.ndarray:
    """Shares per bin over a centred window of ``width`` bins (1 s): the replay is analysed offline, so a centred
    window shows a change where it happened instead of lagging it, and a bin that got no sample is no gap."""
    kernel = np.ones(width)
    smooth = np.stack([np.convolve(counts[:, j], kernel, mode="same") for j in range(counts.shape[1])], axis=1)
    totals = smooth.sum(axis=1, keepdims=True)
    return np.divide(smooth, totals, out=np.zeros_like(smooth), where=totals > 0)


def queue_limit(state: UnitState, slo_s: float) -> int:
    """Requests that can wait at an endpoint and still be served within the SLO: floor(C (SLO - s) / s)."""
    if state.concurrency <= 0 or state.latency_s >= slo_s:
        return 0
    return int(state.concurrency * (slo_s - state.latency_s) / state.latency_s + 1e-9)


def _centred_mean(values: np.ndarray, width: int = 4) -> np.ndarray:
    """The mean over a centred window of ``width`` bins, of the bins there are (no zero padding at the ends)."""
    kernel = np.ones(width)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones_like(values), kernel, mode="same")


def _takes_capacity(event: Event, before: UnitState, after: UnitState) -> bool:
    return event.kind != "kill" and after.mu_rps < before.mu_rps


def settle_times(
    counts: np.ndarray, events: Sequence[Event], records: Sequence[RequestRecord], slo_s: float,
    duration_s: float, band: float = 0.15, *, names: Optional[Sequence[str]] = None,
    pending: Optional[np.ndarray] = None, units: Optional[Sequence[UnitState]] = None,
) -> List[Dict[str, Any]]:
    """Per event: settle_s and recovery_s, as the module docstring defines them."""
    out = []
    for k, event in enumerate(events):
        end = min(events[k + 1].at_s if k + 1 < len(events) else duration_s, event.at_s + 5.0, duration_s)
        first, last = int(round(event.at_s / BIN_S)), int(round(end / BIN_S))
        ok = np.ones(max(last - first, 0), dtype=bool)
        j = list(names).index(event.endpoint) if names is not None and event.endpoint in names else None
        if j is not None and len(ok) >= 4:
            window = counts[first:last]
            shares = smoothed_shares(window)[:, j]
            seen = np.convolve(window.sum(axis=1), np.ones(4), mode="same")  # requests in each bin's 1 s window
            ok &= np.abs(shares - shares[-4:].mean()) <= band + 1.0 / np.maximum(seen, 1.0)
        if j is not None and pending is not None and units is not None:
            before = unit_states_at(units, events[:k], event.at_s)[j]
            after = unit_states_at(units, events[: k + 1], event.at_s)[j]
            if _takes_capacity(event, before, after):
                ok &= _centred_mean(pending[first:last, j]) <= queue_limit(after, slo_s)
        failed = [r.arrival_s for r in records if event.at_s <= r.arrival_s < end and not r.ok]
        if failed:
            ok[: min(len(ok), int((max(failed) - event.at_s) / BIN_S) + 1)] = False
        settle: Optional[float] = None
        if len(ok) and ok[-1]:
            settle = (np.nonzero(~ok)[0].max() + 1) * BIN_S if (~ok).any() else 0.0
        bad = [r.arrival_s for r in records if event.at_s <= r.arrival_s < end and (not r.ok or r.latency_s > slo_s)]
        out.append({
            "event": event.label or f"{event.kind} {event.endpoint}",
            "at_s": event.at_s,
            "settle_s": settle,
            "recovery_s": round(max(bad) - event.at_s, 3) if bad else 0.0,
        })
    return out


def policy_figures(
    records: Sequence[RequestRecord], samples: Sequence[Sample], prices_per_hour: Mapping[str, float],
    names: Sequence[str], events: Sequence[Event], slo_s: float, duration_s: float,
    units: Optional[Sequence[UnitState]] = None,
) -> Dict[str, Any]:
    latencies = np.array([r.latency_s for r in records if r.ok])
    ok = int(sum(1 for r in records if r.ok))
    within = int(sum(1 for r in records if r.ok and r.latency_s <= slo_s))
    errors: Dict[str, int] = defaultdict(int)
    for r in records:
        if not r.ok:
            errors[r.error[:80]] += 1
    counts = share_series(samples, names, duration_s)
    served = counts.sum(axis=0)
    pct = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else (lambda q: math.nan)
    return {
        "requests": len(records),
        "slo_attainment": within / len(records) if records else math.nan,
        "errors": len(records) - ok,
        "error_kinds": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99),
        "cost_per_1k": cost_per_1k(samples, prices_per_hour, ok),
        "traffic_share": {n: float(served[i] / served.sum()) if served.sum() else 0.0 for i, n in enumerate(names)},
        "events": settle_times(counts, events, records, slo_s, duration_s, names=names,
                               pending=pending_series(samples, names, duration_s), units=units),
    }
