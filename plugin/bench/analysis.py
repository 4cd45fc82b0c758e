"""From a policy's replay to its figures: SLO attainment, latency percentiles, errors, cost, settling times.

Cost model (the paper's "cost of inference" for an autoscaled pool): a request costs the price per second of the
accelerator that served it times its service time (one request per accelerator at a time), taken from the servers'
own busy-time counters (``tritonmix_emulated_service_us``, else ``nv_inference_compute_infer_duration_us``: see
``sampler``). Cost per 1,000 = total / successful x 1000.

Settling after an event: traffic shares per endpoint in 0.25 s bins, over a centred 1 s window; the event's window runs
to the next event (at most 5 s); its final shares are the window's last second. Traffic has settled at the first
moment after which every endpoint's share stays within ``band`` of its final share. ``recovery_s`` is the time from
the event to the last request in the window that missed the SLO or failed (0 when none did).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .loadgen import RequestRecord
from .sampler import Sample
from .trace import Event

__all__ = ["policy_figures", "share_series", "settle_times", "cost_per_1k"]

BIN_S = 0.25


def cost_per_1k(samples: Sequence[Sample], prices_per_hour: Mapping[str, float], successes: int) -> float:
    spent = sum(prices_per_hour[s.endpoint] / 3600.0 * s.busy_s for s in samples)
    return 1000.0 * spent / successes if successes else math.nan


def share_series(samples: Sequence[Sample], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints] of requests served per bin."""
    bins = int(math.ceil(duration_s / BIN_S)) + 1
    counts = np.zeros((bins, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for s in samples:
        b = min(int(s.t_s / BIN_S), bins - 1)
        counts[b, index[s.endpoint]] += s.success + s.failure
    return counts


def smoothed_shares(counts: np.ndarray, width: int = 4) -> np.ndarray:
    """Shares per bin over a centred window of ``width`` bins (1 s): the replay is analysed offline, so a centred
    window shows a change where it happened instead of lagging it, and a bin that got no sample is no gap."""
    kernel = np.ones(width)
    smooth = np.stack([np.convolve(counts[:, j], kernel, mode="same") for j in range(counts.shape[1])], axis=1)
    totals = smooth.sum(axis=1, keepdims=True)
    return np.divide(smooth, totals, out=np.zeros_like(smooth), where=totals > 0)


def settle_times(
    counts: np.ndarray, events: Sequence[Event], records: Sequence[RequestRecord], slo_s: float,
    duration_s: float, band: float = 0.15,
) -> List[Dict[str, Any]]:
    shares = smoothed_shares(counts)
    out = []
    for k, event in enumerate(events):
        end = min(events[k + 1].at_s if k + 1 < len(events) else duration_s, event.at_s + 5.0, duration_s)
        first, last = int(event.at_s / BIN_S), int(end / BIN_S)
        window = shares[first:last]
        settle: Optional[float] = None
        if len(window) >= 4:
            final = window[-4:].mean(axis=0)
            off = np.abs(window - final).max(axis=1) > band
            settled_from = (np.nonzero(off)[0].max() + 1) if off.any() else 0
            settle = settled_from * BIN_S
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
        "events": settle_times(counts, events, records, slo_s, duration_s),
    }
