"""Where a policy's busy cost goes, from a scenario run's ``raw.json`` alone (``tritonmix bench scenario``'s raw file,
or a committed ``benches/results/scenario-*-raw.json.gz``): the choice of endpoints against the work the servers
did. Per policy and seed, each per 1,000 requests and as a multiple of the seed's fluid floor (``oracle.fluid_floor``):

    placement   every request at the endpoint of its first attempt, at that endpoint's nominal service time and
                price when it arrived (the events applied, ``oracle.unit_states_at``): what the policy chose to
                spend, one execution per request
    busy        the servers' own busy time at their prices (``analysis.cost_per_1k``): what was billed
    extra       busy / placement - 1: the work beyond one execution per request at its first endpoint (hedges'
                and retries' copies, a losing copy's time until it stopped or finished, rescue copies), less
                what first attempts that never ran (refused by a dead endpoint) did not cost
    executions  the servers' completed executions per request (successes + failures: cancelled copies and the
                emulation's few parking requests per capacity cut included)

then per pool the share of the placement cost, and the medians over seeds. Runs whose records carry no endpoint
per request (the gateway policies) are left out.

    .venv/bin/python benches/scenario_costs.py RAW [--policy P ...]
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import sys
from typing import Any, Dict, List, Sequence

from tritonmix.bench.analysis import cost_per_1k
from tritonmix.bench.oracle import fluid_floor, unit_states_at
from tritonmix.bench.run import _spec_of
from tritonmix.bench.run import read_raw as load
from tritonmix.bench.sampler import Sample


def placement_cost(requests: Sequence[Sequence[Any]], units: Sequence[Any], events: Sequence[Any],
                   prices: Dict[str, float]) -> Dict[str, float]:
    """Dollars per pool of one execution per request at its first attempt's endpoint (module docstring)."""
    spent: Dict[str, float] = collections.defaultdict(float)
    for arrival_s, _latency_s, _ok, _error, endpoints in requests:
        if not endpoints:
            continue
        unit = {u.name: u for u in unit_states_at(units, events, arrival_s)}[endpoints[0]]
        spent[endpoints[0]] += prices[endpoints[0]] / 3600.0 * unit.latency_s
    return dict(spent)


def breakdown(raw: Dict[str, Any], policies: Sequence[str] = ()) -> Dict[str, List[Dict[str, Any]]]:
    """{policy: [per seed: seed, requests, floor, placement, busy, extra, executions, pools]} (module docstring),
    the costs per 1,000 requests."""
    spec = _spec_of(raw["scenario"])
    units, prices, slo_s = spec.units(), dict(raw["prices"]), spec.slo_ms / 1000.0
    floors: Dict[int, Any] = {}
    out: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)
    for run in raw["runs"]:
        if (policies and run["policy"] not in policies) or not any(r[4] for r in run["requests"]):
            continue
        seed = int(run["seed"])
        if seed not in floors:
            trace = dataclasses.replace(spec, seed=seed).trace()
            floors[seed] = (fluid_floor(units, trace, slo_s)["cost_per_1k"], trace.events)
        floor, events = floors[seed]
        n = len(run["requests"])
        samples = [Sample(*s) for s in run["samples"]]
        pools = placement_cost(run["requests"], units, events, prices)
        placement = 1000.0 * sum(pools.values()) / n
        busy = cost_per_1k(samples, prices, n)
        out[run["policy"]].append({
            "seed": seed, "requests": n, "floor": floor, "placement": placement, "busy": busy,
            "extra": busy / placement - 1.0 if placement else float("nan"),
            "executions": sum(s.success + s.failure for s in samples) / n,
            "pools": {k: 1000.0 * v / n / placement for k, v in sorted(pools.items())} if placement else {}})
    return dict(out)


def main(argv: Sequence[str] = ()) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--policy", action="append", default=[], help="only this policy (repeatable)")
    args = ap.parse_args(argv or None)
    table = breakdown(load(args.raw), args.policy)
    if not table:
        sys.exit("no run with endpoints per request in this raw file (for these policies)")
    print(f"{'policy':<26} {'seed':>5} {'placement':>15} {'busy':>15} {'extra':>7} {'execs/req':>9}  "
          f"placement by pool")
    for policy, rows in table.items():
        for r in rows:
            f = r["floor"]
            pools = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["pools"].items())
            print(f"{policy:<26} {r['seed']:>5} {r['placement']:.4f} ({r['placement'] / f:.3f}x) "
                  f"{r['busy']:.4f} ({r['busy'] / f:.3f}x) {100 * r['extra']:>+6.1f}% {r['executions']:>9.3f}  {pools}")
        med = {k: statistics.median(r[k] / (r["floor"] if k in ("placement", "busy") else 1.0) for r in rows)
               for k in ("placement", "busy", "extra", "executions")}
        print(f"{policy:<26} {'median':>5} {'':>6} ({med['placement']:.3f}x) {'':>6} ({med['busy']:.3f}x) "
              f"{100 * med['extra']:>+6.1f}% {med['executions']:>9.3f}")


if __name__ == "__main__":
    main()
