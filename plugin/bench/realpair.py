"""A REAL heterogeneous pair: the tiny Stable Diffusion pipeline on a GPU (torch CUDA) beside a CPU endpoint.

    python -m tritonmix.bench.realpair --out DIR [--duration 40] [--gpu-device cuda|cpu]

Both endpoints are local Triton servers (``LocalFleet``) serving generated repositories of the real model
(``tritonmix.bench.realsd``): ``gpu`` priced as a g5.xlarge ($1.006/h), ``cpu`` as a c7i.2xlarge ($0.357/h).
Steps:

1. each endpoint alone: sequential latency (one client), then throughput with one closed-loop client per instance;
2. the fleet file the clients get is filled in from those measurements (``max_rps``, ``max_concurrency``), and the
   SLO is ``--slo-factor`` x the slower endpoint's median latency alone;
3. a cosine Poisson trace (``tritonmix.bench.trace``) peaking at ``--load`` x the pair's measured throughput is
   replayed once per policy (tritonmix-auto, round-robin by default), open loop, with the same events for each:
   the gpu endpoint is killed, then restarted (a real model reload);
4. summary.json and summary.md in DIR: latency alone, per policy SLO attainment, p50/p99, errors, cost per 1,000
   images (busy time x price, from Triton's own counters), traffic shares.

Without a GPU (``--gpu-device cpu``, the default when torch sees none) both endpoints run on the CPU: a smoke test
of the whole path, not a measurement of heterogeneity; the summary says which device each endpoint used.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..fleet import Fleet
from .analysis import policy_figures
from .realsd import RealSDSettings, write_real_sd_repository
from .runner import reset_fleet, run_policy
from .scenario import ScenarioSpec
from .senders import make_inputs
from .trace import Event

__all__ = ["main", "run_real_pair", "PRICES"]

logger = logging.getLogger(__name__)

MODEL = "stable_diffusion"
PRICES = {"gpu": ("g5.xlarge", 1.006), "cpu": ("c7i.2xlarge", 0.357)}


class _BenchFleet:
    """The live LocalFleet, but with the fleet file filled in from measurements (what the clients are given)."""

    def __init__(self, local_fleet: Any, fleet: Fleet) -> None:
        self._local = local_fleet
        self.fleet = fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)


def _client(url: str, timeout_s: float) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)


def measure_alone(url: str, instances: int, sequential: int, per_client: int, timeout_s: float) -> Dict[str, Any]:
    """Latency of one request at a time, then throughput with ``instances`` closed-loop clients."""
    import tritonclient.http as httpclient

    client = _client(url, timeout_s)
    try:
        for _ in range(2):
            client.infer(MODEL, make_inputs(httpclient))
        latencies = []
        shape = None
        for k in range(sequential):
            started = time.perf_counter()
            result = client.infer(MODEL, make_inputs(httpclient, seed=k))
            latencies.append(time.perf_counter() - started)
            shape = list(result.as_numpy("image").shape)
    finally:
        client.close()

    done: List[float] = []
    lock = threading.Lock()

    def loop(seed: int) -> None:
        own = _client(url, timeout_s)
        try:
            for k in range(per_client):
                started = time.perf_counter()
                own.infer(MODEL, make_inputs(httpclient, seed=seed * 1000 + k))
                with lock:
                    done.append(time.perf_counter() - started)
        finally:
            own.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(instances)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "sequential_requests": sequential,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p90_ms": 1000 * float(np.percentile(latencies, 90)),
        "mean_ms": 1000 * statistics.fmean(latencies),
        "min_ms": 1000 * min(latencies),
        "image_shape": shape,
        "concurrent_clients": instances,
        "concurrent_mean_ms": 1000 * statistics.fmean(done) if done else math.nan,
        "throughput_rps": len(done) / wall if wall > 0 else math.nan,
    }


def _fleet_dict(repos: Dict[str, Path], settings: Dict[str, RealSDSettings]) -> Dict[str, Any]:
    return {
        "slo_ms": 1000.0,
        "mode": "auto",
        "endpoints": [
            {"name": name, "accelerator": "gpu" if settings[name].device == "cuda" else "cpu",
             "instance_type": PRICES[name][0], "price_per_hour": PRICES[name][1],
             "max_concurrency": settings[name].instances, "model_repository": str(repos[name])}
            for name in ("gpu", "cpu")
        ],
    }


def _bench_fleet(local_fleet: Any, settings: Dict[str, RealSDSettings], alone: Dict[str, Dict[str, Any]],
                 slo_ms: float, interval_s: float) -> Fleet:
    endpoints = []
    for name in ("gpu", "cpu"):
        ep = local_fleet.endpoints[name]
        endpoints.append({
            "name": name, "url": ep.http_url, "metrics_url": ep.metrics_url, "protocol": "http",
            "accelerator": "gpu" if settings[name].device == "cuda" else "cpu",
            "instance_type": PRICES[name][0], "price_per_hour": PRICES[name][1],
            "max_concurrency": settings[name].instances,
            "max_rps": round(alone[name]["throughput_rps"], 3),
        })
    return Fleet.from_dict({"slo_ms": slo_ms, "mode": "auto", "controller": {"interval_s": interval_s},
                            "endpoints": endpoints})


def _service_ms(samples: Sequence[Any], name: str) -> Optional[float]:
    busy = sum(s.busy_s for s in samples if s.endpoint == name)
    served = sum(s.success for s in samples if s.endpoint == name)
    return 1000 * busy / served if served else None


def run_real_pair(args: argparse.Namespace) -> Dict[str, Any]:
    from ..local import LocalFleet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu_device = args.gpu_device or _default_device()
    settings = {
        "gpu": RealSDSettings(device=gpu_device, instances=args.gpu_instances, steps=args.steps,
                              image_size=args.image_size, threads=args.gpu_threads),
        "cpu": RealSDSettings(device="cpu", instances=args.cpu_instances, steps=args.steps,
                              image_size=args.image_size, threads=args.cpu_threads),
    }
    work = Path(tempfile.mkdtemp(prefix="tritonmix-realpair-"))
    repos = {name: write_real_sd_repository(work / name, s) for name, s in settings.items()}
    fleet = Fleet.from_dict(_fleet_dict(repos, settings))
    summary: Dict[str, Any] = {"settings": {n: dataclasses.asdict(s) for n, s in settings.items()},
                               "prices_per_hour": {n: p for n, (_, p) in PRICES.items()},
                               "instance_types": {n: t for n, (t, _) in PRICES.items()},
                               "emulated": False, "host": _host()}
    started = time.monotonic()
    with LocalFleet(fleet, work_dir=work / "fleet", ready_timeout_s=args.ready_timeout) as local_fleet:
        summary["fleet_start_s"] = round(time.monotonic() - started, 1)
        print(f"fleet up in {summary['fleet_start_s']} s (gpu endpoint on {gpu_device})", flush=True)
        alone = {}
        for name in ("gpu", "cpu"):
            alone[name] = measure_alone(local_fleet.endpoints[name].http_url, settings[name].instances,
                                        args.alone_requests, args.alone_per_client, args.timeout)
            a = alone[name]
            print(f"{name} alone: p50 {a['p50_ms']:.1f} ms p90 {a['p90_ms']:.1f} ms; {a['concurrent_clients']} "
                  f"clients: {a['throughput_rps']:.2f} img/s (mean {a['concurrent_mean_ms']:.1f} ms)", flush=True)
        summary["alone"] = alone
        capacity = sum(a["throughput_rps"] for a in alone.values())
        slo_ms = args.slo_ms or args.slo_factor * max(a["p50_ms"] for a in alone.values())
        peak = args.load * capacity
        d = args.duration
        events = (Event(round(0.35 * d, 2), "kill", "gpu", None, "gpu endpoint killed"),
                  Event(round(0.55 * d, 2), "restart", "gpu", None, "gpu endpoint restarted"))
        spec = ScenarioSpec(name="realpair", duration_s=d, base_rps=round(0.3 * peak, 3), peak_rps=round(peak, 3),
                            events=events, slo_ms=slo_ms, interval_s=args.interval, request_timeout_s=args.timeout,
                            seed=args.seed, model=MODEL)
        trace = spec.trace()
        bench = _BenchFleet(local_fleet, _bench_fleet(local_fleet, settings, alone, slo_ms, args.interval))
        summary["scenario"] = {"duration_s": d, "base_rps": spec.base_rps, "peak_rps": spec.peak_rps,
                               "requests": len(trace.arrivals_s), "slo_ms": slo_ms, "seed": args.seed,
                               "events": [dataclasses.asdict(e) for e in events],
                               "pair_capacity_rps": capacity}
        print(f"trace: {len(trace.arrivals_s)} requests over {d:.0f} s, {spec.base_rps:.2f}..{spec.peak_rps:.2f} "
              f"req/s; SLO {slo_ms:.0f} ms", flush=True)
        prices = {n: PRICES[n][1] for n in ("gpu", "cpu")}
        figures: Dict[str, Any] = {}
        for k, policy in enumerate(args.policies):
            if k:
                reset_fleet(bench, spec, {n: settings[n].instances for n in ("gpu", "cpu")})
            run = run_policy(policy, bench, spec, trace)
            f = policy_figures(run.records, run.samples, prices, ["gpu", "cpu"], trace.events, slo_ms / 1000.0, d)
            f["decisions"] = len(run.decisions)
            f["service_ms"] = {n: _service_ms(run.samples, n) for n in ("gpu", "cpu")}
            f["wall_s"] = round(run.wall_s, 1)
            figures[policy] = f
            print(f"{policy:<14} SLO {f['slo_attainment'] * 100:6.2f}%  errors {f['errors']:3d}  "
                  f"p50 {f['p50_s'] * 1000:.0f} ms  p99 {f['p99_s'] * 1000:.0f} ms  ${f['cost_per_1k']:.5f}/1k  "
                  f"share gpu {f['traffic_share']['gpu'] * 100:.1f}% cpu {f['traffic_share']['cpu'] * 100:.1f}%",
                  flush=True)
        summary["policies"] = figures
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def markdown(summary: Dict[str, Any]) -> str:
    s, host = summary["scenario"], summary["host"]
    lines = [
        f"# tritonmix real pair: tiny Stable Diffusion, gpu ({summary['settings']['gpu']['device']}) + cpu",
        "",
        f"Host: {host.get('gpu') or 'no GPU'}; {host.get('cpus')} CPUs; torch {host.get('torch')}. REAL model "
        f"(random-weight tiny SD, {summary['settings']['gpu']['steps']} steps, "
        f"{summary['settings']['gpu']['image_size']}x{summary['settings']['gpu']['image_size']} images), "
        "not emulated. Prices are the instance types' on-demand prices, not this host's.",
        "",
        "## Each endpoint alone",
        "",
        "| endpoint | device | instances | p50 ms | p90 ms | img/s (closed loop, 1 client per instance) | $/h |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("gpu", "cpu"):
        a, st = summary["alone"][name], summary["settings"][name]
        lines.append(f"| {name} ({summary['instance_types'][name]}) | {st['device']} | {st['instances']} | "
                     f"{a['p50_ms']:.1f} | {a['p90_ms']:.1f} | {a['throughput_rps']:.2f} | "
                     f"{summary['prices_per_hour'][name]} |")
    lines += [
        "",
        f"## Replay: {s['requests']} requests over {s['duration_s']:.0f} s, cosine Poisson "
        f"{s['base_rps']:.2f}..{s['peak_rps']:.2f} req/s, SLO {s['slo_ms']:.0f} ms",
        "",
        "Events: " + "; ".join(f"t={e['at_s']} s {e['label']}" for e in s["events"]) + ".",
        "",
        "| policy | SLO attainment | errors | p50 ms | p99 ms | $ / 1k images | gpu share | cpu share | "
        "service ms gpu / cpu |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for policy, f in summary["policies"].items():
        svc = " / ".join("-" if f["service_ms"][n] is None else f"{f['service_ms'][n]:.1f}" for n in ("gpu", "cpu"))
        lines.append(f"| {policy} | {f['slo_attainment'] * 100:.1f}% | {f['errors']} | {f['p50_s'] * 1000:.0f} | "
                     f"{f['p99_s'] * 1000:.0f} | {f['cost_per_1k']:.5f} | {f['traffic_share']['gpu'] * 100:.1f}% | "
                     f"{f['traffic_share']['cpu'] * 100:.1f}% | {svc} |")
    return "\n".join(lines) + "\n"


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _host() -> Dict[str, Any]:
    info: Dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tritonmix.bench.realpair", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for summary.json and summary.md")
    p.add_argument("--gpu-device", choices=("cuda", "cpu"), default=None,
                   help="where the 'gpu' endpoint runs (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of trace per policy")
    p.add_argument("--load", type=float, default=0.7, help="peak rate as a fraction of the pair's throughput")
    p.add_argument("--slo-ms", type=float, default=None)
    p.add_argument("--slo-factor", type=float, default=3.0, help="SLO = this x the slower endpoint's p50 alone")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--gpu-instances", type=int, default=2)
    p.add_argument("--cpu-instances", type=int, default=2)
    p.add_argument("--gpu-threads", type=int, default=1, help="torch CPU threads per gpu-endpoint instance")
    p.add_argument("--cpu-threads", type=int, default=4, help="torch threads per cpu-endpoint instance")
    p.add_argument("--alone-requests", type=int, default=20)
    p.add_argument("--alone-per-client", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.5, help="controller interval (s)")
    p.add_argument("--timeout", type=float, default=20.0, help="per-request timeout (s)")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--policies", type=lambda v: [x for x in v.split(",") if x],
                   default=["tritonmix-auto", "round-robin"])
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=os.environ.get("TRITONMIX_LOG", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    summary = run_real_pair(parse_args(argv))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
