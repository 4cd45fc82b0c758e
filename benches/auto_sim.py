"""AUTO mode in simulated time: the quick scenario's fleet and trace, or the steady 16 req/s load, replayed through
the real Router, dispatchers and Controller over ``tritonmix.controller.simulation`` (queues, no Triton), several
seeds in a few seconds. A development aid for the controller's estimators and mode switch, not the scenario: the
simulated servers count a request's queue wait at its start and see a capacity cut as a queue only (the emulated
ones also hold requests inside the model for a slot), and there is no rescue or stall watch.

    .venv/bin/python benches/auto_sim.py quick  [--seeds 8] [--mode auto|cost|capacity] [-v]
    .venv/bin/python benches/auto_sim.py steady [--seeds 5] [--mode ...] [-v]

Per seed: requests, SLO attainment, errors, busy cost and goodput cost per 1,000 (price x simulated service time),
mode switches, and (quick) inf2's share of the requests that arrived in the 1.75 s after its capacity returns and the
misses during its cut; then median, min and max over the seeds. ``-v``: per second, requests per endpoint and
misses, and every mode switch with its figures.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
from typing import Any, Dict, List, Tuple

from tritonmix.bench.scenario import QUICK, ScenarioSpec, steady
from tritonmix.controller import INTERACTIVE
from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.emulation.profiles import BUILTIN_PROFILES
from tritonmix.fleet import Fleet

KEY = ("stable_diffusion", INTERACTIVE)
#: inf2's return window of the quick scenario: from its recovery at 9 s, one dwell plus two intervals
RETURN_WINDOW_S = (9.0, 10.75)
CUT_WINDOW_S = (5.0, 9.0)


def build(spec: ScenarioSpec, mode: str, seed: int) -> Simulation:
    """The scenario's fleet file (its controller settings included) over simulated servers with 5% jitter."""
    d = spec.fleet_dict(mode)
    for k, e in enumerate(d["endpoints"]):
        e["url"] = f"127.0.0.1:{9000 + k}"
        e.pop("profile", None)
    models = [ServerModel(BUILTIN_PROFILES[p].latency_s * spec.time_scale, spec.concurrency, jitter=0.05)
              for _, p in spec.pools]
    return Simulation.build(Fleet.from_dict(d), models, seed=seed, jitter=0.0)


def schedule_events(sim: Simulation, spec: ScenarioSpec) -> None:
    """The scenario's events as the simulation can play them: a freeze and a reclaim are kills, a thaw a revival."""
    index = {n: i for i, (n, _) in enumerate(spec.pools)}
    for ev in spec.events:
        i, server = index[ev.endpoint], sim.servers[index[ev.endpoint]]
        if ev.kind == "set_capacity":
            sim.at(ev.at_s, lambda s=server, v=int(ev.value or 1): setattr(s, "concurrency", v))
        elif ev.kind in ("kill", "reclaim", "freeze"):
            sim.at(ev.at_s, lambda i=i: sim.kill(i))
        elif ev.kind in ("thaw", "restart"):
            sim.at(ev.at_s, lambda i=i: sim.revive(i))
        elif ev.kind == "slow_down":
            sim.at(ev.at_s, lambda s=server, v=ev.value or 1.0: setattr(s, "service_s", s.service_s * v))


def run(spec: ScenarioSpec, mode: str, seed: int) -> Tuple[Simulation, Dict[str, float]]:
    sim = build(spec, mode, seed)
    schedule_events(sim, spec)
    sim.run(spec.duration_s, {KEY: spec.trace().rate_at})
    slo_s, res = spec.slo_ms / 1000.0, sim.results
    good = [r for r in res if r.ok and r.latency_s <= slo_s]
    prices = [BUILTIN_PROFILES[p].price_per_hour for _, p in spec.pools]
    spent = sum(p / 3600.0 * s.compute_us / 1e6 for p, s in zip(prices, sim.servers))
    back = [r for r in res if RETURN_WINDOW_S[0] <= r.arrived_s < RETURN_WINDOW_S[1]]
    return sim, {
        "requests": len(res), "slo": len(good) / max(1, len(res)), "errors": sum(not r.ok for r in res),
        "cost_per_1k": 1000.0 * spent / max(1, sum(r.ok for r in res)),
        "goodput_cost_per_1k": 1000.0 * spent / max(1, len(good)),
        "switches": len(sim.controller.decisions("mode")),
        "inf2_share_back": sum(r.endpoint == 0 for r in back) / max(1, len(back)),
        "misses_in_cut": sum(not r.ok or r.latency_s > slo_s for r in res
                             if CUT_WINDOW_S[0] <= r.arrived_s < CUT_WINDOW_S[1]),
    }


def show(sim: Simulation, spec: ScenarioSpec) -> None:
    names = [n for n, _ in spec.pools]
    per: Dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    misses: collections.Counter = collections.Counter()
    for r in sim.results:
        per[int(r.arrived_s)][names[r.endpoint] if r.endpoint >= 0 else "?"] += 1
        misses[int(r.arrived_s)] += not r.ok or r.latency_s > spec.slo_ms / 1000.0
    for sec in sorted(per):
        print(f"  {sec:3d} s {sum(per[sec].values()):3d} req  "
              + " ".join(f"{n}:{per[sec][n]}" for n in names if per[sec][n]) + f"  misses {misses[sec]}")
    for d in sim.controller.decisions("mode"):
        figures = {k: round(v, 1) for k, v in d.figures.items() if k.endswith("_rps")}
        print(f"  {d.at_s - sim.t0:6.2f} s -> {d.new}: {', '.join(d.reasons)} {figures}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["quick", "steady"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--mode", default="auto", choices=["auto", "cost", "capacity"])
    ap.add_argument("-v", action="store_true", help="per second and per switch")
    a = ap.parse_args()
    rows: List[Dict[str, Any]] = []
    for k in range(a.seeds):
        spec = (dataclasses.replace(QUICK, seed=2024 + k) if a.what == "quick"
                else steady(16.0, 30.0, seed=2024 + k))
        sim, fig = run(spec, a.mode, seed=k)
        rows.append(fig)
        print(spec.seed, {key: round(v, 4) for key, v in fig.items()})
        if a.v:
            show(sim, spec)
    for key in rows[0]:
        vals = [r[key] for r in rows]
        print(f"{key}: median {statistics.median(vals):.4g}, min {min(vals):.4g}, max {max(vals):.4g}")


if __name__ == "__main__":
    main()
