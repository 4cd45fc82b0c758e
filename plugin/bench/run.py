"""``run_scenario``: one local fleet, ``seeds`` traces, every policy on each (in an order shuffled per seed);
figures per seed and their medians and worst over seeds, the floor and the offline reference, report and plots.

``summary.json`` (``report`` documents its shape) holds per policy the medians over seeds of ``slo_attainment``,
``cost_per_1k`` and ``goodput_cost_per_1k`` (and the other figures), ``errors`` summed over seeds, the worst seed's
SLO attainment and goodput cost, and ``per_seed``: each seed's figures under the same names. ``raw.json`` holds every
run (policy, seed, its place in that seed's order), each request with the endpoints its attempts went to, every
metrics sample and the controller's decisions: ``recompute(raw.json)`` gives ``summary.json``'s figures back.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .analysis import (BIN_S, Provisioning, busy_from_intervals, placement_series, policy_figures,
                       provisioned_cost, share_series)
from .loadgen import RequestRecord
from .oracle import UnitState, fluid_floor, offline_reference, oracle_cost_per_1k, unit_states_at
from .report import floor_checks, plot_runs, write_raw_body, write_summary
from .runner import PolicyRun, reset_fleet, run_policy
from .sampler import Sample
from .scenario import POLICIES, ScenarioSpec
from .trace import ArrivalTrace

__all__ = ["run_scenario", "COST_MODEL", "read_raw", "raw_of", "series_of", "seed_baselines", "aggregate", "recompute",
           "event_limits"]

logger = logging.getLogger(__name__)

COST_MODEL = ("busy time: each request costs the price per second of the accelerator that served it times its service "
              "time (one request per accelerator at a time: per-second billing of an autoscaled pool); service time "
              "from the EMULATED servers' own tritonmix_emulated_service_us (time holding a slot; Triton's "
              "nv_inference_compute_infer_duration_us where a server does not export it). provisioned: per pool, the "
              "accelerators an autoscaler keeps to carry each window's busy time at its target utilisation, with a "
              "scale-up delay and a scale-down stabilisation, charged whether busy or not (analysis.Provisioning)")

#: figures whose median over seeds the summary gives per policy
MEDIAN_KEYS = ("slo_attainment", "cost_per_1k", "goodput_cost_per_1k", "provisioned_cost_per_1k",
               "provisioned_goodput_cost_per_1k", "p50_s", "p95_s", "p99_s", "cost_vs_oracle", "goodput_vs_floor")


def run_scenario(
    spec: ScenarioSpec,
    out_dir: Path,
    policies: Sequence[str] = POLICIES,
    progress: Optional[Callable[[str], None]] = None,
    seeds: int = 1,
) -> Dict[str, Any]:
    """Start the fleet, replay ``seeds`` traces (seeds ``spec.seed``, ``spec.seed + 1``, ...) once per policy each,
    write summary.json / summary.md / raw.json / PNGs (the plots: the first seed); return the summary."""
    from ..local import LocalFleet

    if seeds < 1:
        raise ValueError(f"seeds {seeds} must be >= 1")
    say = progress or (lambda message: logger.info(message))
    fleet = spec.fleet()
    names = list(fleet.names)
    prices = {e.name: e.price_per_hour for e in fleet.endpoints}
    original = {e.name: int(e.max_concurrency or 1) for e in fleet.endpoints}
    runs: List[Dict[str, Any]] = []
    series: Dict[str, Any] = {}
    started = time.monotonic()
    with LocalFleet(fleet) as local_fleet:
        say(f"fleet of {len(names)} EMULATED endpoints up in {time.monotonic() - started:.1f} s")
        first = True
        for seed in range(spec.seed, spec.seed + seeds):
            seeded = dataclasses.replace(spec, seed=seed)
            trace = seeded.trace()
            order = policy_order(policies, seed)
            say(f"seed {seed}: {len(trace.arrivals_s)} requests over {spec.duration_s:.0f} s per policy; "
                f"order {', '.join(order)}")
            for place, policy in enumerate(order):
                if not first:
                    reset_fleet(local_fleet, spec, original)
                first = False
                run = run_policy(policy, local_fleet, seeded, trace)
                runs.append({"policy": policy, "seed": seed, "order": place, **_raw(run)})
                if seed == spec.seed:
                    series[policy] = series_of(run.records, run.samples, names, prices, spec.duration_s)
                f = policy_figures(run.records, run.samples, prices, names, trace.events, fleet.slo_s,
                                   spec.duration_s, spec.units())
                say(f"{policy:<24} SLO {f['slo_attainment'] * 100:6.2f}%  errors {f['errors']:4d}  "
                    f"p99 {f['p99_s']:.3f} s  ${f['cost_per_1k']:.4f}/1k  goodput ${f['goodput_cost_per_1k']:.4f}/1k"
                    f"  ({run.wall_s:.0f} s)")
    body = {"scenario": dataclasses.asdict(spec), "endpoints": names, "prices": prices, "seeds": seeds,
            "policies": list(policies), "runs": runs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_raw_body(body, out_dir)
    summary = recompute(body)
    write_summary(summary, out_dir)
    plot_runs({p: series[p] for p in policies if p in series}, names, spec.trace().events, out_dir)
    return summary


def policy_order(policies: Sequence[str], seed: int) -> List[str]:
    """The order the policies run in for ``seed``: shuffled, so that none always runs first (fresh fleet) or
    after the same neighbour."""
    order = list(policies)
    random.Random(seed).shuffle(order)
    return order


def seed_baselines(spec: ScenarioSpec, trace: ArrivalTrace, provisioning: Provisioning) -> Dict[str, Any]:
    """The floor, the offline reference (with its provisioned cost and its placement series) and the first
    edition's planning oracle, for one seed's trace."""
    names = [n for n, _ in spec.pools]
    slo_s = spec.slo_ms / 1000.0
    units = spec.units()
    floor = fluid_floor(units, trace, slo_s)
    reference = offline_reference(units, trace, slo_s)
    placed = [(p[0], p[1], p[2]) for p in reference["placement"] if p[0]]
    busy = busy_from_intervals(placed, names, spec.duration_s + spec.slo_ms / 1000.0, provisioning.window_s)
    spent = provisioned_cost(busy, [dict(zip(names, [u.price_per_hour for u in units]))[n] for n in names],
                             provisioning)
    served = reference["requests"] - reference["unserved"]
    within = round(reference["slo_attainment"] * reference["requests"])
    ref = {k: v for k, v in reference.items() if k != "placement"}
    ref["provisioned_cost_per_1k"] = 1000.0 * spent / served if served else math.nan
    ref["provisioned_goodput_cost_per_1k"] = 1000.0 * spent / within if within else math.nan
    counts = placement_series([(t, p[0]) for t, p in zip(trace.arrivals_s, reference["placement"])], names,
                              spec.duration_s)
    return {"floor": floor, "offline_reference": ref, "oracle": dict(oracle_cost_per_1k(units, trace)),
            "reference_counts": counts}


def event_limits(spec: ScenarioSpec, units: Sequence[UnitState]) -> List[Tuple[float, float]]:
    """Per event, the issue's limits: settle at dispatch within two controller intervals plus one service time of
    the new placement (the slowest endpoint that is up and can meet the SLO after the event), and the return of a
    recovered pool's share within one dwell time plus two intervals."""
    slo_s = spec.slo_ms / 1000.0
    dwell_s = 5.0 * spec.time_scale
    out = []
    for k, event in enumerate(spec.events):
        after = unit_states_at(units, spec.events[: k + 1], event.at_s)
        service = max((u.latency_s for u in after if u.concurrency > 0 and u.latency_s <= slo_s), default=0.0)
        out.append((round(2 * spec.interval_s + service, 3), round(dwell_s + 2 * spec.interval_s, 3)))
    return out


def read_raw(path: Union[str, Path]) -> Dict[str, Any]:
    """A scenario's ``raw.json`` (or ``raw.json.gz``) as written by ``run_scenario``. OSError, ValueError when it
    cannot be read or parsed."""
    data = Path(path).read_bytes()
    return json.loads(gzip.decompress(data) if str(path).endswith(".gz") else data)


def recompute(raw: Mapping[str, Any], provisioning: Optional[Provisioning] = None) -> Dict[str, Any]:
    """``summary.json``'s content from ``raw.json``'s (``run_scenario`` writes both; this is how the summary is
    made, so every figure in it can be made again from the raw file)."""
    settings = provisioning or Provisioning()
    spec = _spec_of(raw["scenario"])
    names = list(raw["endpoints"])
    prices = dict(raw["prices"])
    slo_s = spec.slo_ms / 1000.0
    limits = event_limits(spec, spec.units())
    per_seed: Dict[int, Dict[str, Any]] = {}
    per_policy: Dict[str, List[Dict[str, Any]]] = {p: [] for p in raw["policies"]}
    for run in raw["runs"]:
        seed = int(run["seed"])
        if seed not in per_seed:
            trace = dataclasses.replace(spec, seed=seed).trace()
            per_seed[seed] = {"trace": trace, **seed_baselines(dataclasses.replace(spec, seed=seed), trace, settings)}
        base = per_seed[seed]
        records = [RequestRecord(a, lat, bool(ok), err, tuple(eps)) for a, lat, ok, err, eps in run["requests"]]
        samples = [Sample(*s) for s in run["samples"]]  # older raw files: no parks_queued (7 fields)
        fig = policy_figures(records, samples, prices, names, base["trace"].events, slo_s, spec.duration_s,
                             spec.units(), reference=base["reference_counts"], provisioning=settings)
        fig["seed"], fig["order"], fig["decisions"] = seed, run["order"], len(run["decisions"])
        oracle, floor = base["oracle"]["cost_per_1k"], base["floor"]["cost_per_1k"]
        fig["cost_vs_oracle"] = fig["cost_per_1k"] / oracle if oracle else None
        fig["goodput_vs_floor"] = fig["goodput_cost_per_1k"] / floor if floor else None
        for event, (settle_limit, return_limit) in zip(fig["events"], limits):
            event["settle_limit_s"] = settle_limit
            if "return_s" in event:
                event["return_limit_s"] = return_limit
        per_policy.setdefault(run["policy"], []).append(fig)
    seeds = sorted(per_seed)
    summary: Dict[str, Any] = {
        "scenario": {**dataclasses.asdict(spec), "requests": [len(per_seed[s]["trace"].arrivals_s) for s in seeds],
                     "emulated": True, "seeds": seeds},
        "cost_model": COST_MODEL,
        "provisioning": dataclasses.asdict(settings),
        "floor": _median_block([per_seed[s]["floor"] for s in seeds], seeds),
        "offline_reference": _median_block([per_seed[s]["offline_reference"] for s in seeds], seeds),
        "oracle": _median_block([per_seed[s]["oracle"] for s in seeds], seeds),
        "policies": {p: aggregate(figs) for p, figs in per_policy.items() if figs},
    }
    summary["floors"], summary["floors_per_seed"] = floor_checks(summary)
    return summary


def _spec_of(fields: Mapping[str, Any]) -> ScenarioSpec:
    from .trace import Event

    known = {f.name for f in dataclasses.fields(ScenarioSpec)}
    values = {k: v for k, v in fields.items() if k in known}
    values["events"] = tuple(Event(**e) if isinstance(e, Mapping) else Event(*e) for e in values["events"])
    values["pools"] = tuple(tuple(p) for p in values["pools"])
    return ScenarioSpec(**values)


def _median(values: Sequence[Any]) -> Any:
    known = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(known) if known else None


def _median_block(blocks: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> Dict[str, Any]:
    """Numbers: median over seeds; plus ``per_seed``."""
    out: Dict[str, Any] = {k: _median([b[k] for b in blocks]) for k, v in blocks[0].items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["per_seed"] = [{"seed": s, **b} for s, b in zip(seeds, blocks)]
    return out


def aggregate(figures: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One policy's figures over seeds: medians (``MEDIAN_KEYS``), ``errors`` and ``requests`` summed, the worst
    seed's SLO attainment and goodput cost, per endpoint the median share, per event the median and worst settle
    and return (None, "not settled", counts as worst; a median is None when half the seeds or more did not settle),
    and ``per_seed``."""
    out: Dict[str, Any] = {k: _median([f[k] for f in figures]) for k in MEDIAN_KEYS}
    out["requests"] = sum(f["requests"] for f in figures)
    out["errors"] = sum(f["errors"] for f in figures)
    kinds: Dict[str, int] = {}
    for f in figures:
        for kind, n in f["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    out["error_kinds"] = kinds
    out["slo_attainment_worst"] = min(f["slo_attainment"] for f in figures)
    out["goodput_cost_per_1k_worst"] = max(f["goodput_cost_per_1k"] for f in figures)
    out["traffic_share"] = {n: _median([f["traffic_share"][n] for f in figures]) for n in figures[0]["traffic_share"]}
    events = []
    for k, first in enumerate(figures[0]["events"]):
        row = {key: first[key] for key in ("event", "at_s", "settle_limit_s", "return_limit_s") if key in first}
        for key in ("settle_s", "return_s"):
            if key not in first:
                continue
            values = [f["events"][k].get(key) for f in figures]
            ranked = sorted(math.inf if v is None else float(v) for v in values)
            middle = statistics.median(ranked)
            row[key] = None if math.isinf(middle) else middle
            row[key.replace("_s", "_worst_s")] = None if math.isinf(ranked[-1]) else ranked[-1]
        row["recovery_s"] = _median([f["events"][k]["recovery_s"] for f in figures])
        events.append(row)
    out["events"] = events
    out["per_seed"] = list(figures)
    return out


def _raw(run: PolicyRun) -> Dict[str, Any]:
    decisions = [(d.at_s, d.kind, d.summary) for d in run.decisions if hasattr(d, "at_s") and hasattr(d, "summary")]
    return raw_of(run.records, run.samples, decisions, run.started_s)


def raw_of(records: Sequence[RequestRecord], samples: Sequence[Sample],
           decisions: Sequence[Tuple[float, str, str]], started_s: float) -> Dict[str, Any]:
    """What the figures are computed from, for ``raw.json``: every request ``[arrival_s, latency_s, ok, error,
    [endpoint of each attempt]]``, every metrics sample ``[t_s, endpoint, success, failure, busy_s, pending,
    from_s, parks_queued]``, and the decisions ``(monotonic time, kind, summary)`` as seconds since ``started_s``."""
    return {
        "requests": [[round(r.arrival_s, 4), round(r.latency_s, 4), r.ok, r.error[:80], list(r.endpoints)]
                     for r in records],
        "samples": [[round(s.t_s, 3), s.endpoint, s.success, s.failure, round(s.busy_s, 6), s.pending,
                     None if s.from_s is None else round(s.from_s, 3), s.parks_queued] for s in samples],
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
        busy[min(int(s.mid_s / BIN_S), len(busy) - 1)] += prices[s.endpoint] * s.busy_s / BIN_S
    return {"counts": counts, "latency": (t_points, p95), "cost_rate": (np.arange(len(busy)) * BIN_S, busy)}
