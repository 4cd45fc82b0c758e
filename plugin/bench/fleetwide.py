"""Figures of many clients on one fleet: a setup's replay, its herd, its controllers' work; floors; the table.

Per setup (on top of ``analysis.policy_figures``: SLO attainment, errors, p50/p95/p99, cost per 1,000, traffic
share, all over the merged records of every client process and the servers' own counters):

- ``cheapest_share_mean`` / ``cheapest_share_std``: the share of the completions served by the cheapest pool (lowest
  cost per request, price per second x service time, as the oracle ranks them), per ``SHARE_BIN_S`` bin of the
  servers' counters (``share_series``, bins with no completion left out), then the mean and the population standard
  deviation over the bins. Clients that herd (all send to the cheapest pool, all leave it, all come back) show as a
  large standard deviation at the same mean.
- ``ejections`` / ``ejected``: the ``eject`` decisions of every controller of the setup during the replay, and the
  endpoints they named; ``mode_switches``: its ``mode`` decisions. A setup that follows a control plane counts the
  plane's decisions plus any its clients make.
- ``ticks``: the ticks of the setup's deciding controllers during the replay (the plane's; or the mean over the
  clients' own controllers). ``scrapes_per_tick``: per endpoint, the Triton metrics scrapes by every controller of
  the setup during the replay divided by ``ticks``: the load on each server's metrics port per tick interval (about
  1 for one controller, N for N controllers deciding alone). None ("n/a") where a controller does not count them.
- ``disturbed``: the endpoints an event named (killed, cut, slowed down) or whose servers counted a failure: the only
  endpoints an ejection may name without being a false ejection.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .analysis import BIN_S, share_series
from .oracle import UnitState
from .sampler import Sample
from .trace import Event

__all__ = ["SHARE_BIN_S", "cheapest_pool", "cheapest_share", "controller_figures", "disturbed_endpoints",
           "clients_floor_checks", "clients_table"]

#: bin of the cheapest pool's share over time (two sampling bins of the servers' counters)
SHARE_BIN_S = 2 * BIN_S


def cheapest_pool(units: Sequence[UnitState]) -> str:
    """The pool with the lowest cost per request (price per second x service time)."""
    return min(units, key=lambda u: u.cost_per_request).name


def cheapest_share(samples: Sequence[Sample], names: Sequence[str], cheapest: str,
                   duration_s: float) -> Dict[str, Optional[float]]:
    """Mean and population standard deviation over ``SHARE_BIN_S`` bins of the cheapest pool's share of the
    completions in each bin (module docstring); None when no bin had a completion."""
    counts = share_series(samples, names, duration_s)
    per_bin = int(round(SHARE_BIN_S / BIN_S))
    usable = len(counts) // per_bin * per_bin
    wide = counts[:usable].reshape(-1, per_bin, len(names)).sum(axis=1)
    totals = wide.sum(axis=1)
    shares = wide[totals > 0, list(names).index(cheapest)] / totals[totals > 0]
    if not len(shares):
        return {"mean": None, "std": None, "bins": 0}
    return {"mean": float(shares.mean()), "std": float(shares.std()), "bins": int(len(shares))}


def disturbed_endpoints(events: Sequence[Event], samples: Sequence[Sample]) -> List[str]:
    """Endpoints an event named or whose servers counted a failed request."""
    return sorted({e.endpoint for e in events} | {s.endpoint for s in samples if s.failure > 0})


def controller_figures(decisions: Sequence[Sequence[Any]], ticks: Sequence[Optional[int]],
                       scrapes: Sequence[Optional[Sequence[int]]], plane_ticks: Optional[int],
                       names: Sequence[str]) -> Dict[str, Any]:
    """Ejections, mode switches, ticks and scrapes per tick (module docstring). ``decisions``: (t, kind,
    endpoint, summary) of every controller; ``ticks`` / ``scrapes``: per client controller during the replay
    (None: not exposed); ``plane_ticks``: the plane's ticks, None without a plane (the plane's scrapes are one
    entry of ``scrapes``)."""
    ejected = [d[2] for d in decisions if d[1] == "eject"]
    known = [t for t in ticks if t is not None]
    setup_ticks: Optional[float] = plane_ticks if plane_ticks is not None else (
        float(np.mean(known)) if known else None)
    counted = [s for s in scrapes if s is not None]
    per_tick: Optional[Dict[str, float]] = None
    if counted and setup_ticks:
        totals = np.sum(np.array(counted, dtype=float), axis=0)
        per_tick = {name: float(totals[i] / setup_ticks) for i, name in enumerate(names)}
    return {
        "ejections": len(ejected),
        "ejected": sorted({e for e in ejected if e}),
        "mode_switches": sum(1 for d in decisions if d[1] == "mode"),
        "ticks": setup_ticks,
        "scrapes": None if not counted else [int(x) for x in np.sum(np.array(counted), axis=0)],
        "scrapes_per_tick": per_tick,
        "scrapes_per_endpoint_per_tick": None if per_tick is None else max(per_tick.values()),
    }


def clients_floor_checks(setups: Mapping[str, Mapping[str, Any]]) -> Dict[str, bool]:
    """The issue's floors, each setup of several clients against ``n1``:

    - following a plane: 0 errors; SLO attainment at most 1 point below n1's; cost per 1,000 at most 5% above
      n1's; one scrape per endpoint per tick (every endpoint's scrapes <= the plane's ticks + 1: a scrape may be in
      flight at either edge of the replay);
    - deciding alone: 0 errors; SLO attainment at most 3 points below n1's; no ejection of an undisturbed endpoint.
    """
    base = setups.get("n1")
    if base is None:
        return {}
    checks: Dict[str, bool] = {}
    for name, fig in setups.items():
        if name == "n1" or fig["clients"] < 2:
            continue
        checks[f"{name}: 0 errors"] = fig["errors"] == 0
        points = 1.0 if fig["plane"] else 3.0
        checks[f"{name}: SLO attainment >= n1's - {points:g} point{'s' if points > 1 else ''}"] = (
            fig["slo_attainment"] >= base["slo_attainment"] - points / 100.0)
        if fig["plane"]:
            checks[f"{name}: cost per 1k <= 1.05x n1's"] = fig["cost_per_1k"] <= 1.05 * base["cost_per_1k"]
            ticks, scrapes = fig["ticks"], fig["scrapes"]
            checks[f"{name}: one scrape per endpoint per tick"] = bool(
                ticks and scrapes is not None and max(scrapes) <= ticks + 1)
        else:
            false = sorted(set(fig["ejected"]) - set(fig["disturbed"]))
            checks[f"{name}: no ejection of an undisturbed endpoint"] = not false
    return checks


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def clients_table(summary: Mapping[str, Any]) -> str:
    """One row per setup: the figures of the module docstring."""
    cheapest = summary["cheapest_pool"]
    rows = [f"| setup | clients | SLO attainment | errors | p99 s | $ per 1k | {cheapest} share mean | "
            f"{cheapest} share std | ejections | mode switches | scrapes / endpoint / tick |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, f in summary["setups"].items():
        ejected = f" ({', '.join(f['ejected'])})" if f["ejected"] else ""
        rows.append(
            f"| {name} | {f['clients']} | {f['slo_attainment'] * 100:.2f}% | {f['errors']} | {_fmt(f['p99_s'])} | "
            f"{_fmt(f['cost_per_1k'], 4)} | {_fmt(f['cheapest_share_mean'], 2)} | {_fmt(f['cheapest_share_std'], 2)} | "
            f"{f['ejections']}{ejected} | {f['mode_switches']} | {_fmt(f['scrapes_per_endpoint_per_tick'], 2)} |")
    return "\n".join(rows)
