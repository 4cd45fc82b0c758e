"""Why an event's traffic settled when it did, from a scenario run's ``raw.json`` alone: per policy and seed, the
settle time of each event (``tritonmix.bench.analysis.settle_times``) and which of its conditions held it last (the
share of the dispatches, the endpoint's queue after a cut, a failed request), read from the same per-bin checks
(``analysis.settle_checks``) that make the figure.

    .venv/bin/python benches/scenario_settle.py RAW [--policy tritonmix-auto] [--event TEXT] [-v]

``--event``: only the events whose label holds TEXT (e.g. "inf2 loses"). ``-v``: per 0.25 s bin of the event's
window, the endpoint's share of the dispatches over the second ahead, its queue (the centred mean of Triton's
pending gauge) and which conditions failed there.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
from typing import Any, Dict, List, Optional, Sequence

from tritonmix.bench.analysis import (BIN_S, dispatch_series, failed_conditions, pending_series, settle_checks,
                                      settled, share_series)
from tritonmix.bench.loadgen import RequestRecord
from tritonmix.bench.run import _spec_of
from tritonmix.bench.run import read_raw as load
from tritonmix.bench.sampler import Sample


def blame(check: Dict[str, Any]) -> Dict[str, Any]:
    """The settle of one event's checks and, when it is later than 0, which conditions failed in its last bin
    before it (``held_by``, in the order share, queue, failure)."""
    settle_s, k = settled(check)
    return {"settle_s": settle_s, "held_by": [] if k is None else failed_conditions(check, k)}


def policy_checks(raw: Dict[str, Any], policy: str) -> List[Dict[str, Any]]:
    """Per seed of ``policy``: {"seed", "checks"} with ``analysis.settle_checks``'s per-event checks."""
    spec = _spec_of(raw["scenario"])
    names, slo_s = list(raw["endpoints"]), spec.slo_ms / 1000.0
    out = []
    for run in sorted((r for r in raw["runs"] if r["policy"] == policy), key=lambda r: r["seed"]):
        events = dataclasses.replace(spec, seed=int(run["seed"])).trace().events
        records = [RequestRecord(a, lat, bool(ok), err, tuple(eps)) for a, lat, ok, err, eps in run["requests"]]
        samples = [Sample(*s) for s in run["samples"]]
        counts = dispatch_series(records, names, spec.duration_s)
        if counts is None:  # no endpoint per request (the gateway's runs): completions, as policy_figures does
            counts = share_series(samples, names, spec.duration_s)
        checks = settle_checks(counts, events, records, slo_s, spec.duration_s, names=names,
                               pending=pending_series(samples, names, spec.duration_s), units=spec.units())
        out.append({"seed": run["seed"], "checks": checks})
    return out


def bins_table(check: Dict[str, Any]) -> List[str]:
    """-v: one line per bin of the event's window."""
    lines = []
    at = check["event"].at_s
    for k in range(check["bins"]):
        failed = failed_conditions(check, k)
        share = f"{check['shares'][k]:.2f}" if check["share"] is not None else "  - "
        queue = f"{check['queue_mean'][k]:4.1f}" if check["queue"] is not None else "  - "
        lines.append(f"    {at + k * BIN_S:6.2f} s  share {share}  queue {queue}  {', '.join(failed) or 'ok'}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--policy", default="tritonmix-auto")
    ap.add_argument("--event", default="", help="only the events whose label holds this text")
    ap.add_argument("-v", action="store_true", help="every bin of each event's window")
    a = ap.parse_args(argv)
    raw = load(a.raw)
    if a.policy not in raw["policies"]:
        raise SystemExit(f"policy {a.policy} not in this raw file (it has {', '.join(raw['policies'])})")
    held: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for seed in policy_checks(raw, a.policy):
        for check in seed["checks"]:
            label = check["event"].label or f"{check['event'].kind} {check['event'].endpoint}"
            if a.event not in label:
                continue
            b = blame(check)
            settle = "not settled" if b["settle_s"] is None else f"{b['settle_s']:.2f} s"
            extra = ""
            if check["queue"] is not None:
                extra = f", queue limit {check['queue_limit']}"
            if check["share"] is not None:
                extra += f", final share {check['final_share']:.2f}"
            print(f"{a.policy} seed {seed['seed']} {label}: settle {settle}"
                  + (f", held by {' + '.join(b['held_by'])}" if b["held_by"] else "") + extra)
            for name in b["held_by"]:
                held[label][name] += 1
            if a.v:
                print("\n".join(bins_table(check)))
    for label, counter in held.items():
        print(f"{label}: held last by " + ", ".join(f"{name} in {n} seed(s)" for name, n in counter.most_common()))


if __name__ == "__main__":
    main()
