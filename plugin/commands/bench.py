"""``tritonmix bench scenario``: replay the paper's scenario against tritonmix's modes and the baselines."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from ..cli import CLIError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: the scenario replay")
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    sub.required = True
    scenario = sub.add_parser(
        "scenario",
        help="replay the paper's scenario on a local EMULATED fleet, once per policy",
        description="Start a local fleet of emulated accelerator pools (the paper's five units plus CPU), replay one "
        "cosine-wave Poisson trace with capacity events for every policy, write summary.json, summary.md and plots.",
    )
    scenario.add_argument("--quick", action="store_true", help="the short replay (about 20 s per policy)")
    scenario.add_argument("--out", default="bench-results/scenario", help="output folder")
    scenario.add_argument("--policies", default="", help="comma-separated subset of policies")
    scenario.add_argument("--seed", type=int, default=None, help="trace seed")
    scenario.add_argument("--protocol", choices=("http", "grpc"), default="http",
                          help="what every policy's client speaks (gRPC: a hedge's losing copy is cancelled)")
    scenario.add_argument("--hedge", type=float, nargs="?", const=0.05, default=None, metavar="MAX_SHARE",
                          help="hedged requests for the tritonmix policies, at most MAX_SHARE of requests "
                               "(default 0.05)")
    scenario.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import markdown_table
    from ..bench.run import run_scenario
    from ..bench.scenario import FULL, POLICIES, QUICK

    spec = QUICK if args.quick else FULL
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    if args.hedge is not None and not 0.0 <= args.hedge <= 1.0:
        raise CLIError(f"--hedge: {args.hedge} must be a share in [0, 1]")
    spec = dataclasses.replace(spec, protocol=args.protocol,
                               hedge=None if args.hedge is None else {"max_share": args.hedge})
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] or list(POLICIES)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise CLIError(f"unknown policy {unknown[0]!r} (known: {', '.join(POLICIES)})")
    started = time.monotonic()
    hedging = "off" if spec.hedge is None else f"on (max_share {spec.hedge['max_share']})"
    print(f"scenario '{spec.name}': EMULATED accelerators (time_scale {spec.time_scale}), SLO {spec.slo_ms:.0f} ms, "
          f"{spec.protocol}, hedging {hedging}", flush=True)
    summary = run_scenario(spec, Path(args.out), policies, progress=lambda m: print(m, flush=True))
    print()
    print(markdown_table(summary))
    print()
    for check, passed in summary["floors"].items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {check}")
    print(f"\nwrote {args.out}/summary.json, summary.md and plots in {time.monotonic() - started:.0f} s")
    return 0
