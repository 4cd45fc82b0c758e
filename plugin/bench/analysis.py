"""From a policy's replay to its figures: SLO attainment, latency percentiles, errors, two costs, settling times.

Costs, per 1,000 requests served (``cost_per_1k``) and per 1,000 requests that met the SLO (``goodput_cost_per_1k``:
what the SLO-met work cost, the misses' cost included), in two views:

- **busy time** (the paper's "cost of inference" for per-second billing): a request costs the price per second of
  the accelerator that served it times its service time (one request per accelerator at a time), taken from the
  servers' own busy-time counters (``tritonmix_emulated_service_us``, else ``nv_inference_compute_infer_duration_us``:
  see ``sampler``);
- **autoscaled provisioned capacity** (``provisioned_cost``, what instances paid whether busy or not): per pool and
  per window of ``window_s``, the accelerators needed to carry that window's busy time at ``target_utilisation``,
  ``ceil(busy / (window x target))``; a reactive autoscaler has them ``scale_up_delay_s`` later and keeps them for
  ``stabilisation_s`` before scaling down, so each window is charged the larger of its own need and the most needed
  over the windows the delay and the stabilisation span (the load was served, so never less than its own need).
  Scale to zero is allowed (no minimum replicas).

Settling after an event on endpoint E, judged over the event's window (from the event to the next one, at most 5 s,
in 0.25 s bins) **at dispatch**: shares are of the requests the policy sent, by arrival time and the endpoint of
their first attempt (``RequestRecord.endpoints``, in ``raw.json``), so they show a change when the policy made it,
not a service time later when the servers' counters see it (the counters are used only where the records carry no
endpoint). Traffic has settled at the first bin boundary T after which, to the end of the window, all of these hold:

- E's share of the dispatches over the 1 s from each bin boundary on (bins *inside* the event's window only),
  stays within ``band`` (0.15) of its share over the window's last second, plus one request's worth of share (1/n
  for the n requests of that second: one stray request, such as the controller's probe trickle, in a sparse second
  is no movement): what the policy sent from T on is what it settled to, so a policy that switched at T settles at
  T (a centred window would report it half a window late);
- where the event took capacity away (a cut, a slow-down; ``units`` gives the pools' states), E's Triton queue (the
  pending-request gauge less the emulation's own parking requests still queued in it, ``Sample.queued``; the most
  seen in each bin, averaged over the same centred 1 s: a one-sample Poisson burst is no overload) stays within
  what the SLO absorbs at E's new capacity, ``floor(C' x (SLO - s') / s')`` requests for C' slots of service time
  s': the policy sends E no more than it can serve. A policy that never moves traffic off a cut pool never settles
  (its queue only grows), where a share alone would call it settled at once;
- no request arriving after T in the window failed (client-visible): traffic no longer goes to a dead endpoint.

``settle_s`` is T (None when the window ends first: not settled). ``recovery_s`` is the time from the event to the
last request in the window that missed the SLO or failed (0 when none did). After an event that gives capacity back
(capacity raised, restart, thaw), ``return_s`` is the time until E's dispatch share (the same 1 s ahead) first
reaches its share again, less ``band`` and one request's worth (None: not within the window): how long the policy
leaves a recovered cheap pool idle. Its share: the lower of what the policy itself sent E over the second before the
fault (the last event that took capacity from E) and what the offline reference (``oracle.offline_reference``)
gives E over the same second (the load may have grown past what E can carry; the reference fills E to 100%, which
a policy keeping headroom never matches).
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .loadgen import RequestRecord
from .oracle import UnitState, unit_states_at
from .sampler import Sample
from .trace import Event

__all__ = ["policy_figures", "share_series", "pending_series", "dispatch_series", "placement_series",
           "busy_from_intervals", "settle_times", "settle_checks", "settled", "failed_conditions", "return_times",
           "queue_limit", "cost_per_1k", "busy_per_window", "provisioned_cost", "Provisioning"]

BIN_S = 0.25


def cost_per_1k(samples: Sequence[Sample], prices_per_hour: Mapping[str, float], successes: int) -> float:
    spent = sum(prices_per_hour[s.endpoint] / 3600.0 * s.busy_s for s in samples)
    return 1000.0 * spent / successes if successes else math.nan


@dataclasses.dataclass(frozen=True)
class Provisioning:
    """The autoscaled-provisioned cost view's settings (scenario seconds)."""

    window_s: float = 1.0
    target_utilisation: float = 0.8
    scale_up_delay_s: float = 1.0
    stabilisation_s: float = 2.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or not 0 < self.target_utilisation <= 1 or self.scale_up_delay_s < 0 \
                or self.stabilisation_s < 0:
            raise ValueError(f"bad provisioning settings {self}")


def busy_per_window(samples: Sequence[Sample], names: Sequence[str], duration_s: float,
                    window_s: float) -> np.ndarray:
    """Array [windows, endpoints] of busy (slot-)seconds, each sample's at the middle of its period."""
    windows = int(math.ceil(duration_s / window_s)) + 1
    out = np.zeros((windows, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for s in samples:
        out[min(int(s.mid_s / window_s), windows - 1), index[s.endpoint]] += s.busy_s
    return out


def busy_from_intervals(placed: Sequence[Tuple[str, float, float]], names: Sequence[str], duration_s: float,
                        window_s: float) -> np.ndarray:
    """``busy_per_window``'s array from ``(endpoint, start_s, end_s)`` service intervals (the offline reference's),
    each interval's time split over the windows it spans."""
    windows = int(math.ceil(duration_s / window_s)) + 1
    out = np.zeros((windows, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for name, start, end in placed:
        w = int(start / window_s)
        while start < end and w < windows:
            edge = end if w == windows - 1 else min(end, (w + 1) * window_s)
            out[w, index[name]] += edge - start
            start, w = edge, w + 1
    return out


def provisioned_cost(busy: np.ndarray, prices_per_hour: Sequence[float], settings: Provisioning) -> float:
    """Dollars for the autoscaled pools (module docstring) given ``busy_per_window``'s array."""
    need = np.ceil(busy / (settings.window_s * settings.target_utilisation) - 1e-9)
    delay = int(math.ceil(settings.scale_up_delay_s / settings.window_s - 1e-9))
    hold = int(math.ceil(settings.stabilisation_s / settings.window_s - 1e-9))
    charged = need.copy()
    for w in range(len(need)):
        lo, hi = max(0, w - delay - hold), max(0, w - delay + 1)
        if hi > lo:
            charged[w] = np.maximum(charged[w], need[lo:hi].max(axis=0))
    return float((charged * np.asarray(prices_per_hour)).sum() * settings.window_s / 3600.0)


def share_series(samples: Sequence[Sample], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints] of requests served per bin (each sample's at the middle of its period)."""
    return _binned(samples, names, duration_s, lambda cell, s: cell + s.success + s.failure, lambda s: s.mid_s)


def pending_series(samples: Sequence[Sample], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints]: the most clients' requests seen queued (Triton's pending gauge less the emulation's
    parking requests in it, ``Sample.queued``) in each bin."""
    return _binned(samples, names, duration_s, lambda cell, s: max(cell, s.queued), lambda s: s.t_s)


def dispatch_series(records: Sequence[RequestRecord], names: Sequence[str],
                    duration_s: float) -> Optional[np.ndarray]:
    """Array [bins, endpoints] of requests dispatched per bin (arrival time, first attempt's endpoint); None when
    no record says where it went."""
    if not any(r.endpoints for r in records):
        return None
    return placement_series([(r.arrival_s, r.endpoint) for r in records], names, duration_s)


def placement_series(placed: Sequence[Tuple[float, str]], names: Sequence[str], duration_s: float) -> np.ndarray:
    """Array [bins, endpoints] counting ``(time, endpoint)`` pairs (unknown endpoints left out)."""
    bins = int(math.ceil(duration_s / BIN_S)) + 1
    out = np.zeros((bins, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for t, name in placed:
        if name in index:
            out[min(max(int(t / BIN_S), 0), bins - 1), index[name]] += 1
    return out


def _binned(samples: Sequence[Sample], names: Sequence[str], duration_s: float,
            fold: Callable[[float, Sample], float], when: Callable[[Sample], float]) -> np.ndarray:
    """Array [bins of BIN_S, endpoints], each cell ``fold``ed over the samples of its bin and endpoint from 0."""
    bins = int(math.ceil(duration_s / BIN_S)) + 1
    out = np.zeros((bins, len(names)))
    index = {n: i for i, n in enumerate(names)}
    for s in samples:
        b, i = min(max(int(when(s) / BIN_S), 0), bins - 1), index[s.endpoint]
        out[b, i] = fold(out[b, i], s)
    return out


def forward_shares(counts: np.ndarray, width: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """(shares, requests) per bin over the ``width`` bins (1 s) from that bin on, of the bins there are: what was
    sent from each bin boundary on, so that a policy that switched at T is seen to have switched at T."""
    ahead = np.stack([np.convolve(counts[:, j][::-1], np.ones(width))[: len(counts)][::-1]
                      for j in range(counts.shape[1])], axis=1)
    totals = ahead.sum(axis=1)
    shares = np.divide(ahead, totals[:, None], out=np.zeros_like(ahead), where=totals[:, None] > 0)
    return shares, totals


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
    """A cut or a slow-down (an endpoint that is gone has no queue to judge)."""
    return event.kind not in ("kill", "reclaim", "freeze") and after.mu_rps < before.mu_rps


def _gives_back(event: Event, before: UnitState, after: UnitState) -> bool:
    return event.kind in ("restart", "thaw") or (event.kind == "set_capacity" and after.mu_rps > before.mu_rps)


def _window(events: Sequence[Event], k: int, duration_s: float) -> Tuple[int, int, float]:
    """Event k's window in bins [first, last) and its end in seconds."""
    event = events[k]
    end = min(events[k + 1].at_s if k + 1 < len(events) else duration_s, event.at_s + 5.0, duration_s)
    return int(round(event.at_s / BIN_S)), int(round(end / BIN_S)), end


def _share_before_fault(counts: np.ndarray, events: Sequence[Event], k: int, j: int,
                        units: Sequence[UnitState]) -> Optional[float]:
    """Endpoint j's dispatch share over the second before the last event ahead of event k that took capacity from
    it (None: no such event, or nothing sent then)."""
    for m in range(k - 1, -1, -1):
        if events[m].endpoint != events[k].endpoint:
            continue
        before = unit_states_at(units, events[:m], events[m].at_s)[j]
        after = unit_states_at(units, events[: m + 1], events[m].at_s)[j]
        if after.mu_rps < before.mu_rps:
            end = int(round(events[m].at_s / BIN_S))
            sent = counts[max(0, end - 4):end].sum(axis=0)
            return float(sent[j] / sent.sum()) if sent.sum() else None
    return None


def return_times(counts: np.ndarray, reference: np.ndarray, events: Sequence[Event], names: Sequence[str],
                 units: Sequence[UnitState], duration_s: float, band: float = 0.15) -> List[Optional[float]]:
    """Per event: ``return_s`` (module docstring) for events that give capacity back, else None."""
    out: List[Optional[float]] = []
    for k, event in enumerate(events):
        before = unit_states_at(units, events[:k], event.at_s)
        after = unit_states_at(units, events[: k + 1], event.at_s)
        j = list(names).index(event.endpoint) if event.endpoint in names else None
        if j is None or not _gives_back(event, before[j], after[j]):
            out.append(None)
            continue
        first, last, _ = _window(events, k, duration_s)
        window, target = counts[first:last], reference[first:last]
        if len(window) < 4:
            out.append(None)
            continue
        (shares, seen), wanted = forward_shares(window), forward_shares(target)[0][:, j]
        shares = shares[:, j]
        had = _share_before_fault(counts, events, k, j, units)
        if had is not None:
            wanted = np.minimum(wanted, had)
        reached = np.nonzero(shares >= wanted - band - 1.0 / np.maximum(seen, 1.0))[0]
        out.append(round(float(reached[0]) * BIN_S, 3) if len(reached) else math.nan)
    return out


def settle_checks(
    counts: np.ndarray, events: Sequence[Event], records: Sequence[RequestRecord], slo_s: float,
    duration_s: float, band: float = 0.15, *, names: Optional[Sequence[str]] = None,
    pending: Optional[np.ndarray] = None, units: Optional[Sequence[UnitState]] = None,
) -> List[Dict[str, Any]]:
    """Per event, each condition of the module docstring per bin of the event's window (None: not judged):
    ``share`` (E's share of the dispatches 1 s ahead within ``band`` of its final share), ``queue`` (E's queue
    within ``queue_limit``, only after an event that took capacity), ``no_failure`` (no request from that bin on in
    the window failed); with the figures they judge: ``shares``, ``final_share``, ``queue_mean``, ``queue_limit``;
    and ``late``, the arrival times of the window's requests that failed or missed the SLO (for ``recovery_s``).
    ``settle_times`` reads its figures from these, so a settle can be explained bin by bin."""
    out = []
    for k, event in enumerate(events):
        first, last, end = _window(events, k, duration_s)
        width = max(last - first, 0)
        check: Dict[str, Any] = {"event": event, "end_s": end, "bins": width, "share": None, "queue": None}
        j = list(names).index(event.endpoint) if names is not None and event.endpoint in names else None
        if j is not None and width >= 4:
            window = counts[first:last]
            shares, seen = forward_shares(window)  # seen: requests in each bin's 1 s ahead
            final = window[-4:].sum(axis=0)
            final_share = final[j] / final.sum() if final.sum() else 0.0
            check.update(share=np.abs(shares[:, j] - final_share) <= band + 1.0 / np.maximum(seen, 1.0),
                         shares=shares[:, j], final_share=float(final_share))
        if j is not None and pending is not None and units is not None:
            before = unit_states_at(units, events[:k], event.at_s)[j]
            after = unit_states_at(units, events[: k + 1], event.at_s)[j]
            if _takes_capacity(event, before, after):
                queue, limit = _centred_mean(pending[first:last, j]), queue_limit(after, slo_s)
                check.update(queue=queue <= limit, queue_mean=queue, queue_limit=limit)
        no_failure = np.ones(width, dtype=bool)
        failed = [r.arrival_s for r in records if event.at_s <= r.arrival_s < end and not r.ok]
        if failed:
            no_failure[: min(width, int((max(failed) - event.at_s) / BIN_S) + 1)] = False
        check["no_failure"] = no_failure
        check["late"] = [r.arrival_s for r in records
                         if event.at_s <= r.arrival_s < end and (not r.ok or r.latency_s > slo_s)]
        out.append(check)
    return out


def settled(check: Mapping[str, Any]) -> Tuple[Optional[float], Optional[int]]:
    """(settle_s, k) of one event's ``settle_checks``: settle_s None when the window's last bin fails (not settled);
    k the last bin in which some condition failed (None: none did)."""
    ok = check["no_failure"].copy()
    for condition in (check["share"], check["queue"]):
        if condition is not None:
            ok &= condition
    if not len(ok):
        return None, None
    if not ok[-1]:
        return None, len(ok) - 1
    if ok.all():
        return 0.0, None
    k = int(np.nonzero(~ok)[0].max())
    return (k + 1) * BIN_S, k


def failed_conditions(check: Mapping[str, Any], k: int) -> List[str]:
    """The conditions of ``settle_checks`` that failed in bin k, in the order share, queue, failure."""
    named = (("share", check["share"]), ("queue", check["queue"]), ("failure", check["no_failure"]))
    return [name for name, condition in named if condition is not None and not condition[k]]


def settle_times(
    counts: np.ndarray, events: Sequence[Event], records: Sequence[RequestRecord], slo_s: float,
    duration_s: float, band: float = 0.15, *, names: Optional[Sequence[str]] = None,
    pending: Optional[np.ndarray] = None, units: Optional[Sequence[UnitState]] = None,
) -> List[Dict[str, Any]]:
    """Per event: settle_s and recovery_s, as the module docstring defines them (from ``settle_checks``)."""
    out = []
    for check in settle_checks(counts, events, records, slo_s, duration_s, band, names=names, pending=pending,
                               units=units):
        event = check["event"]
        settle, _ = settled(check)
        bad = check["late"]
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
    units: Optional[Sequence[UnitState]] = None, reference: Optional[np.ndarray] = None,
    provisioning: Optional[Provisioning] = None,
) -> Dict[str, Any]:
    """A replay's figures (module docstring); ``reference``: the offline reference's ``placement_series`` (for
    ``return_s``); ``provisioning``: the provisioned view's settings (default ``Provisioning()``)."""
    latencies = np.array([r.latency_s for r in records if r.ok])
    ok = int(sum(1 for r in records if r.ok))
    within = int(sum(1 for r in records if r.ok and r.latency_s <= slo_s))
    errors: Dict[str, int] = defaultdict(int)
    for r in records:
        if not r.ok:
            errors[r.error[:80]] += 1
    completions = share_series(samples, names, duration_s)
    dispatched = dispatch_series(records, names, duration_s)
    counts = completions if dispatched is None else dispatched
    served = counts.sum(axis=0)
    pct = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else (lambda q: math.nan)
    settings = provisioning or Provisioning()
    busy_cost = cost_per_1k(samples, prices_per_hour, 1000)  # dollars
    provisioned = provisioned_cost(busy_per_window(samples, names, duration_s, settings.window_s),
                                   [prices_per_hour[n] for n in names], settings)
    per_1k = (lambda spent, n: 1000.0 * spent / n if n else math.nan)
    event_figures = settle_times(counts, events, records, slo_s, duration_s, names=names,
                                 pending=pending_series(samples, names, duration_s), units=units)
    if reference is not None and units is not None:
        for figure, back in zip(event_figures, return_times(counts, reference, events, names, units, duration_s)):
            if back is not None:
                figure["return_s"] = None if math.isnan(back) else back
    return {
        "requests": len(records),
        "slo_attainment": within / len(records) if records else math.nan,
        "errors": len(records) - ok,
        "error_kinds": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99),
        "cost_per_1k": per_1k(busy_cost, ok),
        "goodput_cost_per_1k": per_1k(busy_cost, within),
        "provisioned_cost_per_1k": per_1k(provisioned, ok),
        "provisioned_goodput_cost_per_1k": per_1k(provisioned, within),
        "shares_from": "dispatch" if dispatched is not None else "completions",
        "traffic_share": {n: float(served[i] / served.sum()) if served.sum() else 0.0 for i, n in enumerate(names)},
        "events": event_figures,
    }
