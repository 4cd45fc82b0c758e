"""``run_scenario``: one local fleet, one trace, every policy in turn; figures, report and plots."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .analysis import BIN_S, policy_figures, share_series
from .loadgen import RequestRecord
from .oracle import oracle_cost_per_1k
from .report import floor_checks, plot_runs, write_raw, write_summary
from .runner import PolicyRun, reset_fleet, run_policy
from .sampler import Sample
from .scenario import POLICIES, ScenarioSpec

__all__ = ["run_scenario", "COST_MODEL", "raw_of", "series_of"]

logger = logging.getLogger(__name__)

COST_MODEL = ("each request costs the price per second of the accelerator that served it times its service time "
              "(one request per accelerator at a time: the cost of an autoscaled pool); service time from the "
              "EMULATED servers' own tritonmix_emulated_service_us (time holding a slot; Triton's "
              "nv_inference_compute_infer_duration_us where a server does not export it)")


def run_scenario(
    spec: ScenarioSpec,
    out_dir: Path,
    policies: Sequence[str] = POLICIES,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Start the fleet, replay the trace once per policy, write summary.json / summary.md / PNGs; return summary."""
    from ..local import LocalFleet

    say = progress or (lambda message: logger.info(message))
    trace = spec.trace()
    fleet = spec.fleet()
    names = list(fleet.names)
    prices = {e.name: e.price_per_hour for e in fleet.endpoints}
    original = {e.name: int(e.max_concurrency or 1) for e in fleet.endpoints}
    figures: Dict[str, Any] = {}
    series: Dict[str, Any] = {}
    raw: Dict[str, Any] = {}
    started = time.monotonic()
    with LocalFleet(fleet) as local_fleet:
        say(f"fleet of {len(names)} EMULATED endpoints up in {time.monotonic() - started:.1f} s; "
            f"{len(trace.arrivals_s)} requests over {spec.duration_s:.0f} s per policy")
        for k, policy in enumerate(policies):
            if k:
                reset_fleet(local_fleet, spec, original)
            run = run_policy(policy, local_fleet, spec, trace)
            figures[policy] = policy_figures(run.records, run.samples, prices, names, trace.events, fleet.slo_s,
                                             spec.duration_s, spec.units())
            figures[policy]["decisions"] = len(run.decisions)
            series[policy] = series_of(run.records, run.samples, names, prices, spec.duration_s)
            raw[policy] = _raw(run)
            f = figures[policy]
            say(f"{policy:<24} SLO {f['slo_attainment'] * 100:6.2f}%  errors {f['errors']:4d}  "
                f"p99 {f['p99_s']:.3f} s  ${f['cost_per_1k']:.4f}/1k  ({run.wall_s:.0f} s)")
    oracle = oracle_cost_per_1k(spec.units(), trace)
    for fig in figures.values():
        fig["cost_vs_oracle"] = fig["cost_per_1k"] / oracle["cost_per_1k"] if oracle["cost_per_1k"] else None
    summary: Dict[str, Any] = {
        "scenario": {**dataclasses.asdict(spec), "requests": len(trace.arrivals_s), "emulated": True},
        "cost_model": COST_MODEL,
        "oracle": dict(oracle),
        "policies": figures,
    }
    summary["floors"] = floor_checks(summary)
    out_dir = Path(out_dir)
    write_summary(summary, out_dir)
    write_raw(raw, names, trace, out_dir)
    plot_runs(series, names, trace.events, out_dir)
    return summary


def _raw(run: PolicyRun) -> Dict[str, Any]:
    decisions = [(d.at_s, d.kind, d.summary) for d in run.decisions if hasattr(d, "at_s") and hasattr(d, "summary")]
    return raw_of(run.records, run.samples, decisions, run.started_s)


def raw_of(records: Sequence[RequestRecord], samples: Sequence[Sample],
           decisions: Sequence[Tuple[float, str, str]], started_s: float) -> Dict[str, Any]:
    """What the figures are computed from, for ``raw.json``: every request and every metrics sample, and the
    decisions ``(monotonic time, kind, summary)`` as seconds since ``started_s``."""
    return {
        "requests": [[round(r.arrival_s, 4), round(r.latency_s, 4), r.ok, r.error[:80]] for r in records],
        "samples": [[round(s.t_s, 3), s.endpoint, s.success, s.failure, round(s.busy_s, 6), s.pending]
                    for s in samples],
        "decisions": [[round(at_s - started_s, 3), kind, summary] for at_s, kind, summary in decisions],
    }


def series_of(records: Sequence[RequestRecord], samples: Sequence[Sample], names: Sequence[str],
              prices: Dict[str, float], duration_s: float) -> Dict[str, Any]:
    """The plots' series: completions per endpoint per bin, rolling p95 latency, cost rate."""
    counts = share_series(samples, names, duration_s)
    arrivals = np.array([r.arrival_s for r in records])
    latency = np.array([r.latency_s if r.ok else np.nan for r in records])
    t_points = np.arange(0.0, duration_s, 0.5)
    p95 = [float(np.nanpercentile(latency[(arrivals >= t - 1.0) & (arrivals < t)], 95))
           if np.any((arrivals >= t - 1.0) & (arrivals < t) & ~np.isnan(latency)) else np.nan for t in t_points]
    busy = np.zeros(len(counts))
    for s in samples:
        busy[min(int(s.t_s / BIN_S), len(busy) - 1)] += prices[s.endpoint] * s.busy_s / BIN_S
    return {"counts": counts, "latency": (t_points, p95), "cost_rate": (np.arange(len(busy)) * BIN_S, busy)}
