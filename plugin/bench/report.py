"""The scenario's outputs: ``summary.json``, a Markdown table and PNG plots.

``summary.json`` schema (documented in the README)::

    {"scenario": {...spec...}, "cost_model": "...", "oracle": {"cost_per_1k": ...},
     "policies": {"<name>": {"requests", "slo_attainment", "errors", "error_kinds", "p50_s", "p95_s", "p99_s",
                             "cost_per_1k", "cost_vs_oracle", "traffic_share": {endpoint: share},
                             "events": [{"event", "at_s", "settle_s", "recovery_s"}]}},
     "floors": {"<check>": true|false}}
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

from .analysis import smoothed_shares

__all__ = ["markdown_table", "write_summary", "write_raw", "plot_runs", "floor_checks"]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _worst_settle(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "n/a"
    if any(e.get("settle_s") is None for e in events):
        return "not settled"
    return _fmt(max(float(e["settle_s"]) for e in events), 2)


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The policies' figures, then settle / recovery times per event ("-": not settled within the event's window)."""
    rows = ["| policy | SLO attainment | errors | p50 s | p95 s | p99 s | $ per 1k | vs oracle | worst settle s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, fig in summary["policies"].items():
        rows.append(
            f"| {name} | {fig['slo_attainment'] * 100:.2f}% | {fig['errors']} | {_fmt(fig['p50_s'])} | "
            f"{_fmt(fig['p95_s'])} | {_fmt(fig['p99_s'])} | {_fmt(fig['cost_per_1k'], 4)} | "
            f"{_fmt(fig.get('cost_vs_oracle'), 2)}x | {_worst_settle(fig.get('events', []))} |"
        )
    rows.append(f"| oracle (offline floor) | n/a | n/a | n/a | n/a | n/a | {_fmt(summary['oracle']['cost_per_1k'], 4)} "
                f"| 1.00x | n/a |")
    labels = [f"{e['event']} @{e['at_s']:g} s" for e in next(iter(summary["policies"].values()), {}).get("events", [])]
    if labels:
        rows += ["", "settle s / recovery s per event (settle '-': not settled within the event's window)", "",
                 "| policy | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for name, fig in summary["policies"].items():
            cells = [f"{'-' if e['settle_s'] is None else _fmt(float(e['settle_s']), 2)} / {_fmt(e['recovery_s'], 2)}"
                     for e in fig.get("events", [])]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def floor_checks(summary: Mapping[str, Any]) -> Dict[str, bool]:
    """The issue's floors for tritonmix AUTO, as booleans (the report prints them; nothing is hard-coded)."""
    policies = summary["policies"]
    auto = policies.get("tritonmix-auto")
    if auto is None:
        return {}
    oracle = summary["oracle"]["cost_per_1k"]
    checks = {
        "auto: >= 99% SLO attainment": auto["slo_attainment"] >= 0.99,
        "auto: 0 client-visible errors": auto["errors"] == 0,
        "auto: cost <= 1.10x oracle": auto["cost_per_1k"] <= 1.10 * oracle,
        "auto: settled <= 1 s after each event": all(
            e["settle_s"] is not None and e["settle_s"] <= 1.0 for e in auto["events"]),
    }
    if "tritonmix-capacity" in policies:
        checks["auto: cost <= 0.8x CAPACITY only"] = auto["cost_per_1k"] <= 0.8 * policies["tritonmix-capacity"]["cost_per_1k"]
    for baseline in ("round-robin", "paper-static-weights"):
        if baseline in policies:
            other = policies[baseline]
            checks[f"auto beats {baseline} on cost and SLO"] = (
                auto["cost_per_1k"] < other["cost_per_1k"] and auto["slo_attainment"] > other["slo_attainment"])
    return checks


def write_summary(summary: Dict[str, Any], out_dir: Path,
                  table: Callable[[Mapping[str, Any]], str] = markdown_table) -> Path:
    """``summary.json``, and ``summary.md`` holding ``table(summary)``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    (out_dir / "summary.md").write_text(table(summary) + "\n")
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
