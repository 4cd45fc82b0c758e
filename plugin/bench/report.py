"""The scenario's outputs: ``summary.json``, a Markdown table and PNG plots.

``summary.json`` schema (documented in docs/scenario.md)::

    {"scenario": {...spec..., "seeds": [...]}, "cost_model": "...", "provisioning": {...},
     "floor": {"cost_per_1k", "placed_requests", "unplaced_requests", ..., "per_seed": [...]},
     "offline_reference": {"cost_per_1k", "goodput_cost_per_1k", "slo_attainment", "provisioned_cost_per_1k",
                           "provisioned_goodput_cost_per_1k", ..., "per_seed": [...]},
     "oracle": {"cost_per_1k", ..., "per_seed": [...]},
     "policies": {"<name>": {"slo_attainment", "cost_per_1k", "goodput_cost_per_1k", "provisioned_cost_per_1k",
                             "provisioned_goodput_cost_per_1k", "p50_s", "p95_s", "p99_s", "cost_vs_oracle",
                             "goodput_vs_floor" (medians over seeds), "errors", "requests" (summed),
                             "slo_attainment_worst", "goodput_cost_per_1k_worst", "error_kinds",
                             "traffic_share": {endpoint: median share},
                             "events": [{"event", "at_s", "settle_s", "settle_worst_s", "settle_limit_s",
                                         "recovery_s", ["return_s", "return_worst_s", "return_limit_s"]}],
                             "per_seed": [{...one seed's figures under the same names, "seed", "order"...}]}},
     "floors": {"<check>": true|false}, "floors_per_seed": {"<check>": seeds in which it held}}
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .analysis import smoothed_shares

__all__ = ["markdown_table", "write_summary", "write_raw", "write_raw_body", "plot_runs", "floor_checks",
           "seed_checks", "ranking_note"]

#: the issue's floors for tritonmix AUTO
SLO_MEDIAN, SLO_WORST, FLOOR_RATIO = 0.99, 0.98, 1.12
PARETO_SLO_POINTS, PARETO_COST = 0.003, 0.02


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.2f}%"


def _worst_settle(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "n/a"
    if any(e.get("settle_s") is None for e in events):
        return "not settled"
    return _fmt(max(float(e["settle_s"]) for e in events), 2)


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The policies' figures (medians over seeds; the worst seed's SLO in brackets), the floor and the offline
    reference; then settle (at dispatch) / return per event (medians); the floors with the seeds they held in; where
    the two cost views rank the policies differently."""
    seeds = len(summary.get("scenario", {}).get("seeds", [])) or 1
    floor = summary["floor"]["cost_per_1k"]
    rows = [f"medians over {seeds} seed(s); busy = per-second billing of busy time, prov. = autoscaled provisioned "
            "capacity; goodput = per 1,000 requests within the SLO", "",
            "| policy | SLO (worst seed) | errors | p99 s | busy $/1k | busy goodput $/1k | vs floor | "
            "prov. goodput $/1k | worst settle s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, fig in summary["policies"].items():
        rows.append(
            f"| {name} | {_pct(fig['slo_attainment'])} ({_pct(fig.get('slo_attainment_worst'))}) | {fig['errors']} "
            f"| {_fmt(fig['p99_s'])} | {_fmt(fig['cost_per_1k'], 4)} | {_fmt(fig['goodput_cost_per_1k'], 4)} | "
            f"{_fmt(fig.get('goodput_vs_floor'), 2)}x | {_fmt(fig.get('provisioned_goodput_cost_per_1k'), 4)} | "
            f"{_worst_settle(fig.get('events', []))} |")
    ref = summary["offline_reference"]
    rows.append(f"| offline reference | {_pct(ref.get('slo_attainment'))} | n/a | n/a | {_fmt(ref['cost_per_1k'], 4)} "
                f"| {_fmt(ref.get('goodput_cost_per_1k'), 4)} | "
                f"{_fmt(ref.get('goodput_cost_per_1k') / floor if floor else None, 2)}x | "
                f"{_fmt(ref.get('provisioned_goodput_cost_per_1k'), 4)} | n/a |")
    rows.append(f"| floor (fluid, lower bound) | n/a | n/a | n/a | {_fmt(floor, 4)} | {_fmt(floor, 4)} | 1.00x | n/a "
                f"| n/a |")
    if "oracle" in summary:
        rows.append(f"| first edition's oracle (not a floor) | n/a | n/a | n/a | "
                    f"{_fmt(summary['oracle']['cost_per_1k'], 4)} | n/a | n/a | n/a | n/a |")
    first = next(iter(summary["policies"].values()), {}).get("events", [])
    labels = [f"{e['event']} @{e['at_s']:g} s" for e in first]
    if labels:
        rows += ["", "settle at dispatch s / return s (median over seeds; '-': not settled or not returned within the "
                 "event's window; return only after an event that gives capacity back); limits: "
                 + ", ".join(f"{e['event']}: settle {e.get('settle_limit_s')}"
                             + (f", return {e['return_limit_s']}" if "return_limit_s" in e else "") for e in first),
                 "", "| policy | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for name, fig in summary["policies"].items():
            cells = []
            for e in fig.get("events", []):
                cell = "-" if e.get("settle_s") is None else _fmt(float(e["settle_s"]), 2)
                if "return_s" in e:
                    cell += " / " + ("-" if e["return_s"] is None else _fmt(float(e["return_s"]), 2))
                cells.append(cell)
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    floors, held = summary.get("floors", {}), summary.get("floors_per_seed", {})
    if floors:
        rows += ["", "| floor (tritonmix-auto) | medians | seeds it held in |", "|---|---|---|"]
        for check, ok in floors.items():
            rows.append(f"| {check} | {'PASS' if ok else 'FAIL'} | {held.get(check, 'n/a')}/{seeds} |")
    note = ranking_note(summary)
    if note:
        rows += ["", note]
    return "\n".join(rows)


def ranking_note(summary: Mapping[str, Any]) -> str:
    """The policies ranked by goodput cost in each view, when the two rankings differ."""
    policies = summary["policies"]

    def ranked(key: str) -> List[str]:
        return sorted(policies, key=lambda p: math.inf if policies[p].get(key) is None else policies[p][key])

    busy, provisioned = ranked("goodput_cost_per_1k"), ranked("provisioned_goodput_cost_per_1k")
    if busy == provisioned:
        return "The busy-time and provisioned views rank the policies by goodput cost alike."
    return ("Ranked by goodput cost, busy time: " + " < ".join(busy) + "; provisioned: " + " < ".join(provisioned)
            + ". The provisioned view charges the accelerators a pool keeps for its peaks, so a policy that spreads "
            "load over more pools (or spikes one) pays for idle capacity that busy time does not count.")


def seed_checks(policies: Mapping[str, Mapping[str, Any]], slo_worst_key: str = "slo_attainment_worst"
                ) -> Dict[str, bool]:
    """The issue's floors for tritonmix AUTO over ``policies`` (a summary's aggregated figures, or one seed's
    figures, where the worst seed is the seed itself)."""
    auto = policies.get("tritonmix-auto")
    if auto is None:
        return {}
    slo, goodput = auto["slo_attainment"], auto["goodput_cost_per_1k"]
    worst = auto.get(slo_worst_key, slo)
    checks = {
        "0 client-visible errors": auto["errors"] == 0,
        f"SLO attainment >= {SLO_MEDIAN:.0%}": slo is not None and slo >= SLO_MEDIAN,
        f"SLO attainment >= {SLO_WORST:.0%} in the worst seed": worst is not None and worst >= SLO_WORST,
        f"goodput cost (busy) <= {FLOOR_RATIO:.2f}x the floor": (auto.get("goodput_vs_floor") is not None
                                                                 and auto["goodput_vs_floor"] <= FLOOR_RATIO),
    }
    dominated_by = [p for p, f in policies.items() if p != "tritonmix-auto" and f["slo_attainment"] is not None
                    and f["goodput_cost_per_1k"] is not None and slo is not None and goodput is not None
                    and f["slo_attainment"] > slo + PARETO_SLO_POINTS
                    and f["goodput_cost_per_1k"] < goodput * (1 - PARETO_COST)]
    checks["on the Pareto front (SLO, goodput cost) of every policy run"] = not dominated_by
    capable = [p for p, f in policies.items() if f["slo_attainment"] is not None and f["slo_attainment"] >= SLO_MEDIAN
               and f["goodput_cost_per_1k"] is not None]
    checks[f"lowest goodput cost of the policies with >= {SLO_MEDIAN:.0%} SLO"] = (
        "tritonmix-auto" in capable and min(capable, key=lambda p: policies[p]["goodput_cost_per_1k"])
        == "tritonmix-auto")
    for e in auto.get("events", []):
        checks[f"settle at dispatch <= {e.get('settle_limit_s')} s: {e['event']}"] = (
            e.get("settle_s") is not None and e["settle_s"] <= e.get("settle_limit_s", 0.0) + 1e-9)
        if "return_limit_s" in e:
            checks[f"share back <= {e['return_limit_s']} s: {e['event']}"] = (
                e.get("return_s") is not None and e["return_s"] <= e["return_limit_s"] + 1e-9)
    return checks


def floor_checks(summary: Mapping[str, Any]) -> Tuple[Dict[str, bool], Dict[str, int]]:
    """The floors on the medians (``seed_checks`` of the summary's policies), and per floor the number of seeds in
    which it held on that seed's own figures (the Pareto checks against the other policies' same seed)."""
    policies = summary["policies"]
    checks = seed_checks(policies)
    held = {check: 0 for check in checks}
    seeds = sorted({f["seed"] for p in policies.values() for f in p.get("per_seed", [])})
    for seed in seeds:
        one = {name: next(f for f in p["per_seed"] if f["seed"] == seed)
               for name, p in policies.items() if any(f["seed"] == seed for f in p.get("per_seed", []))}
        for check, ok in seed_checks(one).items():
            if check in held:
                held[check] += int(ok)
    return checks, held


def write_summary(summary: Dict[str, Any], out_dir: Path,
                  table: Callable[[Mapping[str, Any]], str] = markdown_table) -> Path:
    """``summary.json``, and ``summary.md`` holding ``table(summary)``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    (out_dir / "summary.md").write_text(table(summary) + "\n")
    return path


def write_raw_body(body: Mapping[str, Any], out_dir: Path) -> Path:
    """``raw.json`` holding ``body`` as it is (the scenario's: ``run.recompute`` reads it back)."""
    path = Path(out_dir) / "raw.json"
    path.write_text(json.dumps(body, default=_json_default) + "\n")
    return path


def write_raw(raw: Mapping[str, Any], names: Sequence[str], trace: Any, out_dir: Path) -> Path:
    """``raw.json``: per policy every request ``[arrival_s, latency_s, ok, error]`` and every metrics sample
    ``[t_s, endpoint, success, failure, busy_s, pending]``, the controller's decisions ``[t_s, kind, summary]``
    (tritonmix policies), plus the endpoints and events: enough to recompute every figure."""
    body = {"endpoints": list(names), "events": [dataclasses.asdict(e) for e in trace.events], "policies": raw}
    path = Path(out_dir) / "raw.json"
    path.write_text(json.dumps(body, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def plot_runs(series: Mapping[str, Mapping[str, Any]], names: Sequence[str], events: Sequence[Any],
              out_dir: Path) -> List[Path]:
    """traffic_share.png (stacked share per endpoint, one panel per policy), latency.png, cost_rate.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    policies = list(series)
    fig, axes = plt.subplots(len(policies), 1, figsize=(10, 2.2 * len(policies)), sharex=True, squeeze=False)
    for ax, policy in zip(axes[:, 0], policies):
        counts = series[policy]["counts"]
        t = np.arange(len(counts)) * 0.25
        shares = smoothed_shares(counts)
        ax.stackplot(t, shares.T, labels=names)
        _mark(ax, events)
        ax.set_ylabel(policy, fontsize=8)
        ax.set_ylim(0, 1)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=len(names))
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Traffic share per pool (EMULATED accelerators)")
    paths.append(_save(fig, out_dir / "traffic_share.png"))
    paths.append(_line_plot(series, "latency", "rolling p95 latency (s)", events, out_dir / "latency.png"))
    paths.append(_line_plot(series, "cost_rate", "cost rate ($/h, per accelerator busy time)", events,
                            out_dir / "cost_rate.png"))
    return paths


def _mark(ax: Any, events: Sequence[Any]) -> None:
    for event in events:
        ax.axvline(event.at_s, color="k", linestyle="--", linewidth=0.8)


def _line_plot(series: Mapping[str, Mapping[str, Any]], key: str, label: str, events: Sequence[Any],
               path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for policy, data in series.items():
        t, values = data[key]
        ax.plot(t, values, label=policy, linewidth=1)
    _mark(ax, events)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(label)
    ax.legend(fontsize=7)
    ax.set_title(f"{label} (EMULATED accelerators)")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
