"""``tritonmix bench scenario``: replay the paper's scenario against tritonmix's modes and the baselines.
``tritonmix bench clients``: one trace split over N client processes, per client setup (n1, n8-plane, n8-local)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, List

from ..cli import CLIError
from ..errors import ConfigError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: the scenario replay, many clients on one fleet")
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
    scenario.add_argument("--policies", default="", help="comma-separated policies (default: the six of the report; also "
                          "cheapest-first-spill, weighted-least-request, peak-ewma-p2c, round-robin-slo, p2c-slo, "
                          "tritonmix-gateway, paper-static-envoy, tritonmix-auto-unhedged; 'all': every one)")
    scenario.add_argument("--seed", type=int, default=None, help="the first trace seed")
    scenario.add_argument("--seeds", type=int, default=1,
                          help="trace seeds (seed, seed + 1, ...): every figure is then a median over them, with the "
                               "worst seed beside it; the policy order is shuffled per seed (default 1)")
    scenario.add_argument("--protocol", choices=("http", "grpc"), default="http",
                          help="what every policy's client speaks (gRPC: a hedge's losing copy is cancelled)")
    scenario.add_argument("--models-ignore-cancel", action="store_true",
                          help="the emulated models run a request whose client cancelled it to its end, as an "
                               "ensemble's steps or a backend without cancellation support do (default: they stop it, "
                               "as a python-backend model checking is_cancelled() does; only gRPC passes it on)")
    scenario.add_argument("--hedge", type=float, default=None, metavar="MAX_SHARE",
                          help="hedged requests for the tritonmix policies: at most MAX_SHARE of the requests get a "
                               "copy (default 0.1; 0: no hedging)")
    scenario.add_argument("--hedge-delay-factor", type=float, default=None, metavar="K",
                          help="the hedge leaves after K x its endpoint's usual latency, or when a copy on the fastest "
                               "other endpoint could just still meet the SLO if that is sooner (default: the "
                               "scenario's, tritonmix.bench.scenario.HEDGE)")
    scenario.add_argument("--controller", action="append", default=[], metavar="KEY=VALUE",
                          help="a setting of the tritonmix policies' controller section to try (repeatable; VALUE "
                               "read as JSON where it parses, else as text), e.g. target_utilisation=0.9")
    scenario.set_defaults(func=run)
    replicas = sub.add_parser(
        "replicas", help="each pool's desired replicas over the scenario's trace beside the offline reference's",
        description="Replay the scenario's trace once through tritonmix AUTO on a local EMULATED fleet, record the "
        "controller's desired replicas per pool at every tick, and write replicas.png, replicas.csv and replicas.md "
        "beside the replicas the offline reference needs (tritonmix.bench.replicas states the rule).")
    replicas.add_argument("--quick", action="store_true", help="the short trace (18 s)")
    replicas.add_argument("--out", default="bench-results/replicas", help="output folder")
    replicas.add_argument("--seed", type=int, default=None, help="the trace seed")
    replicas.add_argument("--window", type=float, default=1.0, help="the oracle's window in seconds (default 1)")
    replicas.set_defaults(func=run_replicas)
    again = sub.add_parser("recompute", help="the scenario's summary.json and summary.md again from its raw.json")
    again.add_argument("raw", help="a scenario's raw.json (or raw.json.gz)")
    again.add_argument("--out", default=None, help="output folder (default: the raw file's)")
    again.set_defaults(func=run_recompute)
    _register_clients(sub)


def _register_clients(sub: Any) -> None:
    clients = sub.add_parser(
        "clients",
        help="one trace split over N client processes, per setup: one client, N following a control plane, "
             "N deciding alone",
        description="Start a local EMULATED fleet, split one trace (a steady --load, or the scenario's with its "
        "events) round-robin over N client processes per setup, and report per setup SLO attainment, errors, p99, "
        "cost per 1,000, the cheapest pool's share over time (mean, std), ejections, mode switches and Triton "
        "metrics scrapes per endpoint per tick, with the floor checks. Writes summary.json, summary.md, raw.json "
        "and plots.",
    )
    trace = clients.add_mutually_exclusive_group(required=True)
    trace.add_argument("--load", type=float, metavar="RPS",
                       help="a steady Poisson load of RPS on the five accelerator pools (one accelerator each, "
                            "time_scale 0.1, SLO 150 ms, no events)")
    trace.add_argument("--scenario", choices=("quick", "full"), help="the scenario's trace, fleet and events")
    clients.add_argument("--duration", type=float, default=30.0, metavar="S", help="--load: seconds (default 30)")
    clients.add_argument("--pools", type=int, default=5, metavar="K",
                         help="--load: the first K pools of inf2, trn1, g5-triton, g6-triton, g5-cuda, cpu "
                              "(default 5)")
    clients.add_argument("--setups", default="n1,n8-plane,n8-local",
                         help="comma-separated: n<N> or n<N>-local (N clients, each its own controller), "
                              "n<N>-plane (N clients following one control plane)")
    clients.add_argument("--mode", choices=("auto", "cost", "capacity"), default="auto",
                         help="the fleet's mode (every client's and the plane's)")
    clients.add_argument("--out", default="bench-results/clients", help="output folder")
    clients.add_argument("--seed", type=int, default=None, help="trace seed (client k's router: seed + k)")
    clients.add_argument("--protocol", choices=("http", "grpc"), default="http", help="what every client speaks")
    clients.set_defaults(func=run_clients)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import markdown_table
    from ..bench.run import run_scenario
    from ..bench.scenario import EXTRA_POLICIES, FULL, POLICIES, QUICK

    spec = QUICK if args.quick else FULL
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    if args.hedge is not None and not 0.0 <= args.hedge <= 1.0:
        raise CLIError(f"--hedge: {args.hedge} must be a share in [0, 1]")
    if args.hedge is not None:
        spec = dataclasses.replace(spec, hedge=dict(spec.hedge or {}, max_share=args.hedge) if args.hedge > 0 else None)
    if args.hedge_delay_factor is not None:
        if not args.hedge_delay_factor > 0:
            raise CLIError(f"--hedge-delay-factor: {args.hedge_delay_factor} must be > 0")
        if spec.hedge is None:
            raise CLIError("--hedge-delay-factor: hedging is off (--hedge 0)")
        spec = dataclasses.replace(spec, hedge=dict(spec.hedge, delay_factor=args.hedge_delay_factor))
    spec = dataclasses.replace(spec, protocol=args.protocol, cancellable=not args.models_ignore_cancel)
    if args.controller:
        spec = dataclasses.replace(spec, controller=_settings(args.controller, "--controller"))
        try:
            spec.fleet()
        except ConfigError as exc:
            raise CLIError(f"--controller: {exc}") from None
    if args.seeds < 1:
        raise CLIError(f"--seeds: {args.seeds} must be >= 1")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] or list(POLICIES)
    if policies == ["all"]:
        policies = list(POLICIES + EXTRA_POLICIES)
    unknown = [p for p in policies if p not in POLICIES + EXTRA_POLICIES]
    if unknown:
        raise CLIError(f"unknown policy {unknown[0]!r} (known: {', '.join(POLICIES + EXTRA_POLICIES)})")
    started = time.monotonic()
    hedging = "off" if spec.hedge is None else "on (" + ", ".join(f"{k} {v}" for k, v in spec.hedge.items()) + ")"
    tried = "".join(f", {k} {v}" for k, v in spec.controller.items())
    print(f"scenario '{spec.name}': EMULATED accelerators (time_scale {spec.time_scale}), SLO {spec.slo_ms:.0f} ms, "
          f"{spec.protocol}{'' if spec.cancellable else ' (the models ignore cancellation)'}, hedging {hedging}{tried}",
          flush=True)
    summary = run_scenario(spec, Path(args.out), policies, progress=lambda m: print(m, flush=True),
                           seeds=args.seeds)
    print()
    print(markdown_table(summary))
    print(f"\nwrote {args.out}/summary.json, summary.md, raw.json and plots in {time.monotonic() - started:.0f} s")
    return 0


def run_replicas(args: argparse.Namespace) -> int:
    from ..bench import replicas
    from ..bench.scenario import FULL, QUICK

    spec = QUICK if args.quick else FULL
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    if not args.window > 0.0:
        raise CLIError(f"--window: {args.window} must be > 0 seconds")
    print(f"scenario '{spec.name}' trace through tritonmix-auto: EMULATED accelerators (time_scale "
          f"{spec.time_scale})", flush=True)
    series = replicas.run_replicas(spec, window_s=args.window)
    header = [f"# Desired replicas vs the offline reference: scenario '{spec.name}', seed {spec.seed}, "
              f"window {args.window:g} s, {len(series.desired)} ticks (EMULATED accelerators)"]
    paths = replicas.write_outputs(series, Path(args.out), header)
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def run_recompute(args: argparse.Namespace) -> int:
    from ..bench.report import markdown_table, write_summary
    from ..bench.run import read_raw, recompute

    raw_path = Path(args.raw)
    try:
        raw = read_raw(raw_path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"recompute: cannot read {raw_path}: {exc}") from None
    if "runs" not in raw or "scenario" not in raw:
        raise CLIError(f"recompute: {raw_path} is not a scenario's raw.json (no 'runs' or 'scenario')")
    summary = recompute(raw)
    out = Path(args.out) if args.out else raw_path.parent
    write_summary(summary, out)
    print(markdown_table(summary))
    print(f"\nwrote {out}/summary.json and summary.md")
    return 0


def run_clients(args: argparse.Namespace) -> int:
    from ..bench.fleetwide import clients_table
    from ..bench.multiclient import SPLIT, parse_setups, plane_missing, run_clients as replay_clients
    from ..bench.scenario import FULL, QUICK, UNITS, steady

    try:
        setups = parse_setups(args.setups)
    except ValueError as exc:
        raise CLIError(f"--setups: {exc}") from exc
    missing = plane_missing() if any(s.plane for s in setups) else None
    if missing:
        raise CLIError(missing)
    if args.load is not None:
        if args.load <= 0 or args.duration <= 0:
            raise CLIError("--load and --duration must be > 0")
        if not 1 <= args.pools <= len(UNITS):
            raise CLIError(f"--pools: {args.pools} must be in 1..{len(UNITS)}")
        spec = steady(args.load, args.duration, pools=args.pools)
    else:
        spec = QUICK if args.scenario == "quick" else FULL
    spec = dataclasses.replace(spec, protocol=args.protocol, **({} if args.seed is None else {"seed": args.seed}))
    started = time.monotonic()
    print(f"clients '{spec.name}': EMULATED accelerators (time_scale {spec.time_scale}), SLO {spec.slo_ms:.0f} ms, "
          f"{spec.protocol}, mode {args.mode}, setups {', '.join(s.name for s in setups)}; split {SPLIT}", flush=True)
    summary = replay_clients(spec, Path(args.out), setups, args.mode, progress=lambda m: print(m, flush=True))
    print()
    print(clients_table(summary))
    print()
    for check, passed in summary["floors"].items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {check}")
    print(f"\nwrote {args.out}/summary.json, summary.md, raw.json and plots in {time.monotonic() - started:.0f} s")
    return 0


def _settings(items: List[str], flag: str) -> Dict[str, Any]:
    """``KEY=VALUE`` items as a dict (VALUE as JSON where it parses, else text); CLIError naming a malformed one."""
    out: Dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CLIError(f"{flag}: {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out
