"""Figures of the gateway (benches/results/gateway.md), with perf_analyzer (benches/perf_analyzer.py) and real
Triton servers on this machine. Run each under the bench lock:

    flock /tmp/tritonmix-bench.lock .venv/bin/python benches/gateway_bench.py overhead [--rounds 3]
    flock /tmp/tritonmix-bench.lock .venv/bin/python benches/gateway_bench.py plan [--changes 50]
    flock /tmp/tritonmix-bench.lock .venv/bin/python benches/gateway_bench.py faults

overhead: one Triton server (add_sub, and ``sleep20``: a python-backend model that holds each request 20 ms, 8
          instances); perf_analyzer over HTTP direct, through the gateway and through a plain hand-configured Envoy
          (static cluster, least request, nothing else), interleaved per round: p50/p99 at concurrency 1 on
          add_sub, throughput at concurrency 32 on sleep20. The median of the rounds is reported, and per
          path the bench process's CPU% (it holds the gateway's in-process plane) and Envoy's CPU per request
          during the c=1 measurement.
idle:     per gateway variant, no requests: the CPU% of Envoy, Triton and the bench process's threads (the
          in-process plane), and Envoy's xDS reloads and health checks, over one window.
plan:     the time from the plane's tick that publishes plan G (the controller's listener, in-process) to Envoy's
          admin holding G's endpoints (the ``tritonmix.generation`` metadata of every cluster's endpoints, polled
          every 2 ms), over consecutive plans.
faults:   three servers behind the gateway, perf_analyzer at concurrency 8 on sleep20 through it; 3 s in, one of:
          SIGKILL an endpoint, SIGSTOP one (SIGCONT 6 s later), restart the in-process plane.
spill:    COST mode with a cheap endpoint of 100 req/s and two dear ones, ~400 req/s asked through the gateway:
          the requests per endpoint and the queue time at each (``spill``'s docstring).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_analyzer import PaRow, PerfAnalyzer, failed_requests  # noqa: E402

from tritonmix.fleet import Fleet  # noqa: E402
from tritonmix.gateway import Gateway  # noqa: E402
from tritonmix.gateway.envoy import EnvoyProcess  # noqa: E402
from tritonmix.local import LocalTritonServer  # noqa: E402
from tritonmix.local.server import free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ADD_SUB = {"INPUT0": [4], "INPUT1": [4]}
SLEEP_MODEL = '''
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            time.sleep(0.02)
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", x)]))
        return out
'''
SLEEP_CONFIG = '''name: "sleep20"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 8 } ]
'''


def repository() -> Path:
    """add_sub (the example) and sleep20, in a fresh folder."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix="tritonmix-gwbench-"))
    shutil.copytree(REPO / "model_repository" / "example" / "add_sub", root / "add_sub")
    (root / "sleep20" / "1").mkdir(parents=True)
    (root / "sleep20" / "config.pbtxt").write_text(SLEEP_CONFIG)
    (root / "sleep20" / "1" / "model.py").write_text(SLEEP_MODEL)
    return root


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip()


def plain_envoy(upstream_http_port: int, work: Path) -> tuple:
    """A hand-configured Envoy: one listener, one static cluster, least request; no health checks, retries,
    outlier detection or access log."""
    port = free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "http", "address": {"socket_address": {"address": "127.0.0.1",
                                                                          "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": {
                               "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                        "http_connection_manager.v3.HttpConnectionManager",
                               "stat_prefix": "plain", "codec_type": "AUTO",
                               "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                   {"match": {"prefix": "/"}, "route": {"cluster": "triton"}}]}]},
                               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                           }}]}]}],
            "clusters": [{"name": "triton", "type": "STATIC", "lb_policy": "LEAST_REQUEST",
                          "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": "triton", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                           "port_value": upstream_http_port}}}}]}]}}]},
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "plain.json").write_text(json.dumps(config))
    return EnvoyProcess(work / "plain.json", work).start(), f"127.0.0.1:{port}"


def one_fleet(server: LocalTritonServer, endpoints: int = 1, **controller: Any) -> Fleet:
    """A fleet of ``endpoints`` names for the one server (two or more: the gateway's caps and inner hop)."""
    return Fleet.from_dict({"mode": "auto", "controller": controller, "endpoints": [
        {"name": f"t{k}", "url": server.http_url, "accelerator": "cpu", "price_per_hour": 1.0}
        for k in range(endpoints)]})


#: gateway variants for ``overhead --variants``: Gateway keyword arguments, one setting changed at a time
VARIANTS: Dict[str, Dict[str, Any]] = {
    "gateway": {},                                        # as shipped (in-process plane, checks, retries;
                                                          # one endpoint: no caps, one hop)
    "caps-2": {"endpoints": 2},                           # as shipped, the server named twice: two endpoints,
                                                          # so the caps and their inner hop are on
    "static": {"static_weights": [1.0]},                  # no plane: no Triton scrapes, no admin polling
    "nice-0": {"plane_nice": 0},                          # the plane's threads at the gateway's own priority
    "no-hc": {"health_interval_s": 3600.0},               # active health checks once at start only
    "hc-2s": {"health_interval_s": 2.0},
    "no-retry": {"retries": 0},
    "no-buffer": {"max_request_bytes": 0},                # no buffer filter (no 413 from the gateway)
    "no-routes": {"models": []},                          # one default cluster: no per-model routes
    "no-limits": {"enforce_limits": False},               # model clusters in one hop (no caps, no inner hop)
    "no-lua": {"retry_stub_failures": False},             # the inner hop without its Lua filter
    "bare": {"static_weights": [1.0], "health_interval_s": 3600.0, "retries": 0, "max_request_bytes": 0,
             "models": []},
}


def overhead(args: argparse.Namespace) -> Dict[str, Any]:
    """Per round, in an order rotated each round: direct, the plain Envoy, then each gateway variant started for
    its measurement and stopped after it (so that no variant's health checks or plane load the others' runs).
    c=1 add_sub on every path; c=32 sleep20 on direct, plain Envoy and the first variant unless ``--no-c32``."""
    pa = PerfAnalyzer.ensure()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    c1: Dict[str, List[PaRow]] = {}
    c32: Dict[str, List[PaRow]] = {}
    cpu: Dict[str, List[tuple]] = {}
    with LocalTritonServer(repository()) as server:
        plain, plain_url = plain_envoy(server.ports["http"], Path(tempfile.mkdtemp(prefix="plain-envoy-")))
        try:
            paths = ["direct", "plain-envoy"] + variants
            for r in range(args.rounds):
                k = r % len(paths)
                for name in paths[k:] + paths[:k]:
                    _overhead_path(pa, server, plain_url, plain.pid, name, name in ("direct", "plain-envoy",
                                                                                    variants[0])
                                   and args.c32, args.window_ms, c1, c32, cpu)
                print(f"round {r + 1}: " + ", ".join(
                    f"{n} p50/p99 {c1[n][-1].p50_us:.0f}/{c1[n][-1].p99_us:.0f} us" for n in paths), flush=True)
        finally:
            plain.stop()
    out: Dict[str, Any] = {}
    for name, rows in c1.items():
        out[name] = {"p50_us": statistics.median(x.p50_us for x in rows),
                     "p99_us": statistics.median(x.p99_us for x in rows),
                     "c1_rps": statistics.median(x.throughput for x in rows),
                     "errors": sum(x.errors for x in rows + c32.get(name, [])),
                     "rounds_p50_us": [x.p50_us for x in rows], "rounds_p99_us": [x.p99_us for x in rows],
                     "bench_process_cpu_pct": statistics.median(x[0] for x in cpu[name]),
                     "envoy_cpu_us_per_request": statistics.median(x[1] for x in cpu[name]),
                     "rounds_bench_process_cpu_pct": [round(x[0], 2) for x in cpu[name]],
                     "rounds_envoy_cpu_us_per_request": [round(x[1], 1) for x in cpu[name]]}
        if name in c32:
            out[name].update({"c32_rps": statistics.median(x.throughput for x in c32[name]),
                              "c32_p50_us": statistics.median(x.p50_us for x in c32[name]),
                              "rounds_c32_rps": [x.throughput for x in c32[name]]})
    return out


def _cpu_s(pid: Any) -> float:
    """CPU seconds (user + system) of process ``pid`` ("self": this one, its threads only), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _overhead_path(pa: PerfAnalyzer, server: LocalTritonServer, plain_url: str, plain_pid: int, name: str,
                   with_c32: bool, window_ms: int, c1: Dict[str, List[PaRow]], c32: Dict[str, List[PaRow]],
                   cpu: Dict[str, List[tuple]]) -> None:
    """One path's measurements of one round (a gateway variant is started for them and stopped after)."""
    gw = None
    envoy_pid = None
    if name == "direct":
        url = server.http_url
    elif name == "plain-envoy":
        url, envoy_pid = plain_url, plain_pid
    else:
        options = dict(VARIANTS[name])
        gw = Gateway(one_fleet(server, options.pop("endpoints", 1)), http_port=0, grpc_port=0, **options).start()
        url, envoy_pid = gw.http_url, gw.envoy.pid
    try:
        pa.run("add_sub", url, concurrency=1, shapes=ADD_SUB, window_ms=500, max_trials=3)  # warm the path
        t0, own0, envoy0 = time.monotonic(), _cpu_s("self"), _cpu_s(envoy_pid)
        row = pa.run("add_sub", url, concurrency=1, shapes=ADD_SUB, window_ms=window_ms)
        took = time.monotonic() - t0
        c1.setdefault(name, []).append(row)
        # the bench process holds the gateway's in-process plane and follow thread (perf_analyzer is a child,
        # not counted); Envoy's CPU per request at c=1 (the requests: perf_analyzer's rate over the whole call)
        cpu.setdefault(name, []).append((100 * (_cpu_s("self") - own0) / took,
                                         1e6 * (_cpu_s(envoy_pid) - envoy0) / max(1.0, row.throughput * took)
                                         if envoy_pid else float("nan")))
        if with_c32:
            c32.setdefault(name, []).append(pa.run("sleep20", url, concurrency=32, window_ms=window_ms))
    finally:
        if gw is not None:
            gw.stop()


def idle(args: argparse.Namespace) -> Dict[str, Any]:
    """Per gateway variant, with no requests: over a window of ``--window-ms`` (once the gateway has run 3 s), the
    CPU% of Envoy, of Triton and of this process's threads (the in-process plane, the follow thread), and Envoy's
    xDS reloads and health checks in the window (admin stats)."""
    import threading as _threading

    out: Dict[str, Any] = {}
    window_s = args.window_ms / 1000
    with LocalTritonServer(repository()) as server:
        for name in args.variants.split(","):
            options = dict(VARIANTS[name])
            with Gateway(one_fleet(server, options.pop("endpoints", 1)), http_port=0, grpc_port=0,
                         **options) as gw:
                time.sleep(3.0)
                threads = {t.native_id: t.name for t in _threading.enumerate()}
                stat_filter = "/stats?filter=(update_attempt|health_check.attempt)$"

                def sample() -> tuple:
                    own = {}
                    for tid in threads:
                        try:
                            own[tid] = _cpu_s(f"{os.getpid()}/task/{tid}")
                        except OSError:
                            pass
                    counters = dict(line.split(": ", 1) for line in gw.envoy.admin(stat_filter).strip().splitlines()
                                    if ": " in line)
                    return time.monotonic(), _cpu_s("self"), _cpu_s(gw.envoy.pid), _cpu_s(server.pid), own, counters

                a = sample()
                time.sleep(window_s)
                b = sample()
                took = b[0] - a[0]
                reloads = {k: int(v) - int(a[5].get(k, 0)) for k, v in b[5].items() if "update_attempt" in k}
                checks = {k: int(v) - int(a[5].get(k, 0)) for k, v in b[5].items() if "health_check" in k}
                out[name] = {
                    "window_s": round(took, 2), "process_cpu_pct": round(100 * (b[1] - a[1]) / took, 2),
                    "envoy_cpu_pct": round(100 * (b[2] - a[2]) / took, 2),
                    "triton_cpu_pct": round(100 * (b[3] - a[3]) / took, 2),
                    "threads_cpu_pct": {threads[t]: round(100 * (b[4][t] - a[4][t]) / took, 2)
                                        for t in b[4] if t in a[4] and b[4][t] > a[4][t]},
                    "xds_reloads": sum(reloads.values()), "xds_reloads_by_resource": {k: v for k, v in reloads.items()
                                                                                      if v},
                    "health_checks": sum(checks.values())}
                print(name, json.dumps(out[name]), flush=True)
    return out


def plan_latency(args: argparse.Namespace) -> Dict[str, Any]:
    with LocalTritonServer(repository()) as server:
        fleet = one_fleet(server, interval_s=args.interval)
        with Gateway(fleet, http_port=0, grpc_port=0) as gw:
            assert gw.plane is not None
            published: Dict[int, float] = {}
            gw.plane.controller.add_listener(lambda _snap: published.setdefault(
                gw.plane.controller.plan.generation, time.monotonic()) if gw.plane.controller.plan else None)
            seen: Dict[int, float] = {}
            while len(seen) < args.changes + 2:
                held = gw.envoy_generation()
                now = time.monotonic()
                g = min(held.values()) if held else 0
                if g and g not in seen:
                    seen[g] = now
                time.sleep(0.002)
    gens = sorted(g for g in seen if g in published)[1:args.changes + 1]  # the first may predate the listener
    lat = sorted((seen[g] - published[g]) * 1000 for g in gens)
    return {"changes": len(lat), "interval_s": args.interval, "p50_ms": statistics.median(lat),
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "max_ms": lat[-1]}


def faults(args: argparse.Namespace) -> Dict[str, Any]:
    """Per fault: perf_analyzer's figures, Envoy's retry/ejection/health counters, and from Envoy's access log the
    requests that took over 1 s, the slowest, and the last request sent to the faulted endpoint after the fault
    (how fast the gateway shed it). A faulted server is restarted before the next round (a python-backend model
    does not always survive a 6 s SIGSTOP: its stub's heartbeat times out)."""
    pa = PerfAnalyzer.ensure()
    repo = repository()
    out: Dict[str, Any] = {}
    servers = [LocalTritonServer(repo).start() for _ in range(3)]
    try:
        for fault in args.faults.split(","):
            for k, s in enumerate(servers):
                if not s.running or k == 1:
                    s.stop()
                    servers[k] = LocalTritonServer(repo, http_port=s.ports["http"], grpc_port=s.ports["grpc"],
                                                   metrics_port=s.ports["metrics"]).start()
            fleet = Fleet.from_dict({"mode": "auto", "endpoints": [
                {"name": f"t{k}", "url": s.http_url, "accelerator": "cpu", "price_per_hour": 1.0}
                for k, s in enumerate(servers)]})
            log = Path(tempfile.mkdtemp(prefix="gw-faults-")) / "access.log"
            with Gateway(fleet, http_port=0, grpc_port=0, access_log=str(log)) as gw:
                time.sleep(1.0)
                at: List[float] = []

                def inject(gw: Gateway = gw, fault: str = fault) -> None:
                    time.sleep(3.0)
                    at.append(time.time())
                    if fault == "sigkill":
                        servers[1].kill()
                    elif fault == "sigstop":
                        servers[1].freeze()
                        time.sleep(6.0)
                        servers[1].thaw()
                    elif fault == "plane-restart":
                        gw.restart_plane()

                t = threading.Thread(target=inject)
                t.start()
                measured: Dict[str, Any] = {}
                try:
                    row = pa.run("sleep20", gw.http_url, concurrency=8, window_ms=4000, max_trials=3)
                    measured = {"throughput": row.throughput, "p50_us": row.p50_us, "p99_us": row.p99_us,
                                "errors": row.errors, "requests": row.requests}
                except RuntimeError as exc:  # no stable window (status 2) or a failed request (99): the log says
                    measured = {"perf_analyzer": str(exc).splitlines()[0][:80],
                                "errors": failed_requests(str(exc))}
                t.join()
                stats = gw.envoy.admin("/stats?filter=^cluster.(http~m~sleep20|in~sleep20~t1).(upstream_rq_retry$|"
                                       "upstream_rq_retry_success|outlier_detection.ejections_enforced_total|"
                                       "health_check.failure|upstream_rq_timeout|upstream_rq_5xx)")
                time.sleep(1.5)  # Envoy flushes its access log every second
                # the upstream host in the access log: the server's address, or the inner hop's (envoy://...~t1/...)
                victim = (f"127.0.0.1:{servers[1].ports['http']}", "~sleep20~t1")
                out[fault] = {**measured, **_access(log, victim, at), "envoy": stats.strip().splitlines()}
                print(fault, json.dumps(out[fault]), flush=True)
    finally:
        for s in servers:
            s.stop()
    return out


def _access(log: Path, victim: tuple, at: List[float]) -> Dict[str, Any]:
    """From the access log: non-200 answers, requests over 1 s, the slowest (ms), and the last request started on
    ``victim`` after the fault (seconds after it)."""
    import datetime
    import re

    line_re = re.compile(r"^\[(\S+)\] http \"[^\"]*\" (\d+) \S+ \S+ \d+ \d+ (\d+)ms (\S+)")
    slow, worst, not_ok, last = 0, 0, 0, None
    for line in log.read_text().splitlines() if log.exists() else []:
        m = line_re.match(line)
        if not m:
            continue
        started = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        ms = int(m.group(3))
        slow += ms > 1000
        worst = max(worst, ms)
        not_ok += m.group(2) != "200"
        host = m.group(4)
        if at and (host == victim[0] or victim[1] in host) and started >= at[0]:
            last = max(last or 0.0, started - at[0])
    return {"non_200": not_ok, "over_1s": slow, "slowest_ms": worst,
            "last_sent_to_victim_s": None if last is None else round(last, 3)}


def spill(args: argparse.Namespace) -> Dict[str, Any]:
    """COST mode, three endpoints holding sleep20: the cheap one with 2 instances (100 req/s), two dear ones with 8;
    perf_analyzer at concurrency 8 through the gateway asks ~400 req/s. Where the requests went (Envoy's per-host
    counters) and the queue time at each endpoint (Triton's nv_inference_queue_duration_us / request) show whether
    the excess spilled or queued at the cheap endpoint."""
    import shutil

    pa = PerfAnalyzer.ensure()
    cheap = repository()
    (cheap / "sleep20" / "config.pbtxt").write_text(SLEEP_CONFIG.replace("count: 8", "count: 2"))
    shutil.rmtree(cheap / "add_sub")
    dear = repository()
    servers = [LocalTritonServer(cheap).start(), LocalTritonServer(dear).start(), LocalTritonServer(dear).start()]
    try:
        fleet = Fleet.from_dict({"mode": "cost", "slo_ms": args.slo_ms, "endpoints": [
            {"name": name, "url": s.http_url, "metrics_url": s.metrics_url, "accelerator": name,
             "price_per_hour": price, "max_concurrency": conc}
            for name, s, price, conc in zip(("cheap", "dear-a", "dear-b"), servers, (0.2, 1.0, 1.0), (2, 8, 8))]})
        with Gateway(fleet, http_port=0, grpc_port=0, models=["sleep20"], enforce_limits=args.limits) as gw:
            time.sleep(2.0)
            before = _split(gw)
            queue0 = [_queue_us(s) for s in servers]
            pending: List[tuple] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_pending, args=(servers[0], stop, pending), daemon=True)
            sampler.start()
            row = pa.run("sleep20", gw.http_url, concurrency=args.concurrency, window_ms=4000, max_trials=3)
            stop.set()
            sampler.join()
            after = _split(gw)
            queue1 = [_queue_us(s) for s in servers]
            weights = gw.envoy_weights()["http~m~sleep20"]
            envoy = [line for line in gw.envoy.admin(
                "/stats?filter=^cluster.(http~m~sleep20.upstream_rq_retry(_success|_overflow)?|in~.*active_overflow)$"
            ).strip().splitlines()]
            limits = gw.envoy_limits()
    finally:
        for s in servers:
            s.stop()
    sent = {k: after[k] - before[k] for k in after}
    return {"throughput": row.throughput, "p50_us": row.p50_us, "p99_us": row.p99_us, "errors": row.errors,
            "requests_per_endpoint": sent,
            "queue_us_per_request": [round((q1[0] - q0[0]) / max(1, q1[1] - q0[1]), 1)
                                     for q0, q1 in zip(queue0, queue1)],
            "cheap_pending_max": max((n for _, n in pending), default=0),
            "cheap_pending_max_first_2s": max((n for t, n in pending if t < 2.0), default=0),
            "cheap_pending_p99": sorted(n for _, n in pending)[int(0.99 * (len(pending) - 1))] if pending else 0,
            "cheap_pending_samples": len(pending),
            "cheap_pending_max_per_500ms": [max((n for t, n in pending if k / 2 <= t < (k + 1) / 2), default=0)
                                            for k in range(int(2 * pending[-1][0]) + 1)] if pending else [],
            "envoy_weights_at_end": weights, "limits_at_end": limits, "envoy": envoy, "enforce_limits": args.limits}


def _sample_pending(server: LocalTritonServer, stop: threading.Event, out: List[tuple]) -> None:
    """(seconds since the start, Triton's nv_inference_pending_request_count of sleep20: requests waiting in its
    queue, not executing) every 20 ms until ``stop``."""
    import urllib.request

    t0 = time.monotonic()
    while not stop.wait(0.02):
        try:
            text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=1).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("nv_inference_pending_request_count{") and 'model="sleep20"' in line:
                out.append((time.monotonic() - t0, float(line.rsplit(" ", 1)[1])))


def _split(gw: Gateway) -> Dict[str, int]:
    """Requests per endpoint: Envoy's per-host rq_total over the clusters that reach servers (a capped model's
    inner clusters, not its model cluster, whose attempts include the overflowed ones)."""
    out: Dict[str, int] = {}
    statuses = gw.envoy.admin_json("/clusters?format=json")["cluster_statuses"]
    capped = any(c["name"].startswith("in~") for c in statuses)
    for cluster in statuses:
        if capped and cluster["name"].startswith("http~m~"):
            continue
        for h in cluster.get("host_statuses", []):
            n = sum(int(s.get("value", 0)) for s in h.get("stats", []) if s["name"] == "rq_total")
            out[h["hostname"]] = out.get(h["hostname"], 0) + n
    return out


def _queue_us(server: LocalTritonServer) -> tuple:
    """(sum of queue time in us, successful requests) of sleep20 from Triton's metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=5).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("nv_inference_queue_duration_us{") and 'model="sleep20"' in line:
            total += float(line.rsplit(" ", 1)[1])
        if line.startswith("nv_inference_request_success{") and 'model="sleep20"' in line:
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "idle", "plan", "faults", "spill"])
    parser.add_argument("--slo-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--faults", default="none,sigkill,sigstop,plane-restart")
    parser.add_argument("--variants", default="gateway",
                        help=f"overhead: gateway variants, comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--no-limits", dest="limits", action="store_false",
                        help="spill: the gateway does not enforce the plan's in-flight limits")
    parser.add_argument("--no-c32", dest="c32", action="store_false", help="overhead: skip the c=32 runs")
    args = parser.parse_args()
    fn = {"overhead": overhead, "idle": idle, "plan": plan_latency, "faults": faults, "spill": spill}[args.what]
    result = {"what": args.what, "commit": commit(), "command": " ".join(sys.argv), "result": fn(args)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
