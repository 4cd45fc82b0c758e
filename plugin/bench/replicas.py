"""Each pool's desired replicas over the scenario's trace beside what the offline reference needs
(``tritonmix bench replicas``).

One replay of the trace through tritonmix in AUTO mode on the live local fleet (EMULATED accelerators), its
controller's snapshot recorded at every tick: ``desired_replicas`` per pool, the figure the metrics export and KEDA's
query read (``snapshot.desired_replicas``: ceil(lambda_pool / (u x mean mu of the pool's healthy endpoints))).

The oracle's figure per pool and window of ``window_s``: the load the offline reference (``oracle.offline_reference``:
every arrival and event known, each request on the cheapest endpoint where it finishes within the SLO) places on the
pool in that window, in requests/s, over u x the rate of one of its units then (the mean ``UnitState.mu_rps`` of the
pool's endpoints that are up, ``oracle.unit_states_at``), rounded up:

    oracle_pool(w) = ceil(placed_pool(w) / window_s / (u x mean mu_unit(w)))

Compared on a grid of one controller interval (the desired figure in force at each point, the oracle's of the
window holding it): per pool the mean absolute difference in replicas, the share of time above, below and equal,
and the scale-up delay: for each rise of the oracle's figure, the time until the desired figure reached it (not
reached before the oracle's figure fell again: counted as missed).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .loadgen import replay
from .oracle import offline_reference, unit_states_at
from .runner import make_sender, start_events, warm_up
from .scenario import ScenarioSpec

__all__ = ["ReplicaSeries", "run_replicas", "oracle_replicas", "compare", "write_outputs"]


@dataclasses.dataclass
class ReplicaSeries:
    """The desired figure per tick and the oracle's per window, per pool."""

    pools: List[str]
    desired: List[Tuple[float, Dict[str, int]]]      # (t since the trace started, {pool: replicas}) per tick
    oracle: Dict[str, List[int]]                     # pool -> replicas per window
    window_s: float
    interval_s: float
    duration_s: float


def oracle_replicas(spec: ScenarioSpec, trace: Any, window_s: float) -> Dict[str, List[int]]:
    """The oracle's replicas per pool and window (module docstring)."""
    fleet = spec.fleet()
    pool_of = {e.name: e.pool_name for e in fleet.endpoints}
    units = spec.units()
    u = fleet.controller.target_utilisation
    placement = offline_reference(units, trace, fleet.slo_s)["placement"]
    windows = int(math.ceil(spec.duration_s / window_s))
    placed = {p: [0] * windows for p in set(pool_of.values())}
    for (name, start, _), arrival in zip(placement, trace.arrivals_s):
        if name:
            placed[pool_of[name]][min(windows - 1, int(arrival / window_s))] += 1
    out: Dict[str, List[int]] = {}
    for pool, counts in placed.items():
        row = []
        for w, count in enumerate(counts):
            states = unit_states_at(units, trace.events, w * window_s)
            rates = [s.mu_rps for s in states if pool_of[s.name] == pool and s.mu_rps > 0.0]
            mu = statistics.mean(rates) if rates else statistics.mean(
                s.mu_rps for s in units if pool_of[s.name] == pool)
            row.append(math.ceil(count / window_s / (u * mu) - 1e-9) if count else 0)
        out[pool] = row
    return out


def run_replicas(spec: ScenarioSpec, window_s: float = 1.0) -> ReplicaSeries:
    """Start the local fleet, replay ``spec``'s trace through tritonmix AUTO recording every tick's snapshot, and
    compute the oracle's figures."""
    from ..local import LocalFleet

    trace = spec.trace()
    fleet = spec.fleet()
    desired: List[Tuple[float, Dict[str, int]]] = []
    lock = threading.Lock()
    with LocalFleet(fleet) as local_fleet:
        sender = make_sender("tritonmix-auto", local_fleet, spec)
        warm_up(sender)
        start = time.monotonic()

        def record(snapshot: Any) -> None:  # the controller's clock is time.monotonic
            with lock:
                desired.append((snapshot.at_s - start, dict(snapshot.desired_replicas)))

        sender.controller.add_listener(record)
        stop = threading.Event()
        events = start_events(local_fleet, list(trace.events), start, stop)
        try:
            replay(trace.arrivals_s, sender)
        finally:
            stop.set()
            events.join()
            sender.close()
    pools = sorted({e.pool_name for e in fleet.endpoints})
    return ReplicaSeries(pools, [d for d in desired if d[0] >= 0.0], oracle_replicas(spec, trace, window_s),
                         window_s, fleet.controller.interval_s, spec.duration_s)


def _grid(series: ReplicaSeries) -> List[Tuple[float, Dict[str, int], Dict[str, int]]]:
    """(t, desired in force at t, oracle's window at t) every interval over the trace."""
    out, k, current = [], 0, {p: 0 for p in series.pools}
    steps = int(series.duration_s / series.interval_s)
    for j in range(steps):
        t = j * series.interval_s
        while k < len(series.desired) and series.desired[k][0] <= t:
            current = {p: series.desired[k][1].get(p, 0) for p in series.pools}
            k += 1
        w = min(int(t / series.window_s), min(len(v) for v in series.oracle.values()) - 1)
        out.append((t, dict(current), {p: series.oracle[p][w] for p in series.pools}))
    return out


def compare(series: ReplicaSeries) -> Dict[str, Dict[str, Any]]:
    """Per pool: mean |desired - oracle|, shares of time above / below / equal, scale-up delays (module
    docstring)."""
    grid = _grid(series)
    out: Dict[str, Dict[str, Any]] = {}
    for pool in series.pools:
        diffs = [d[pool] - o[pool] for _, d, o in grid]
        delays, missed = [], 0
        for j in range(1, len(grid)):
            rise, before = grid[j][2][pool], grid[j - 1][2][pool]
            if rise <= before or grid[j][1][pool] >= rise:
                continue
            for k in range(j, len(grid)):
                if grid[k][2][pool] < rise:
                    missed += 1
                    break
                if grid[k][1][pool] >= rise:
                    delays.append(grid[k][0] - grid[j][0])
                    break
            else:
                missed += 1
        out[pool] = {"mean_abs_error": statistics.mean(abs(x) for x in diffs),
                     "above": sum(x > 0 for x in diffs) / len(diffs), "below": sum(x < 0 for x in diffs) / len(diffs),
                     "equal": sum(x == 0 for x in diffs) / len(diffs),
                     "rises": len(delays) + missed, "delay_median_s": statistics.median(delays) if delays else None,
                     "delay_max_s": max(delays) if delays else None, "rises_not_reached": missed}
    return out


def write_outputs(series: ReplicaSeries, out_dir: Path, header: Sequence[str] = ()) -> Dict[str, Path]:
    """``replicas.csv`` (the grid), ``replicas.md`` (``compare``) and ``replicas.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = _grid(series)
    paths = {"csv": out_dir / "replicas.csv", "md": out_dir / "replicas.md", "png": out_dir / "replicas.png"}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "pool", "desired", "oracle"])
        for t, d, o in grid:
            for pool in series.pools:
                writer.writerow([f"{t:.2f}", pool, d[pool], o[pool]])
    paths["md"].write_text(_markdown(compare(series), header))
    _plot(series, grid, paths["png"])
    return paths


def _markdown(figures: Mapping[str, Mapping[str, Any]], header: Sequence[str]) -> str:
    def sec(x: Any) -> str:
        return "-" if x is None else f"{x:.2f} s"

    lines = [*header, "", "| pool | mean abs error (replicas) | above | below | equal | oracle rises | "
             "scale-up delay median / max | rises not reached |", "|---|---|---|---|---|---|---|---|"]
    for pool, f in figures.items():
        lines.append(f"| {pool} | {f['mean_abs_error']:.2f} | {f['above']:.0%} | {f['below']:.0%} | "
                     f"{f['equal']:.0%} | {f['rises']} | {sec(f['delay_median_s'])} / {sec(f['delay_max_s'])} | "
                     f"{f['rises_not_reached']} |")
    return "\n".join(lines) + "\n"


def _plot(series: ReplicaSeries, grid: Sequence[Tuple[float, Dict[str, int], Dict[str, int]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series.pools), 1, figsize=(8, 2.0 * len(series.pools)), sharex=True)
    for ax, pool in zip(list(axes) if len(series.pools) > 1 else [axes], series.pools):
        t = [g[0] for g in grid]
        ax.step(t, [g[2][pool] for g in grid], where="post", label="offline reference needs", color="0.5", lw=2)
        ax.step(t, [g[1][pool] for g in grid], where="post", label="controller's desired replicas", color="C0")
        ax.set_ylabel(f"{pool}\nreplicas")
        ax.grid(alpha=0.3)
    axes_list = list(axes) if len(series.pools) > 1 else [axes]
    axes_list[0].legend(loc="upper left", fontsize=8)
    axes_list[-1].set_xlabel("time since the trace started (s)")
    fig.suptitle("desired replicas per pool vs the offline reference (quick scenario, EMULATED)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
