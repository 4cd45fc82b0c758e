"""The control plane at scale, with simulated clients and no servers: a fleet of 256 endpoints (four pools),
N clients (100, 300, 1,000) each reporting every tick, and 100 live followers on long-polls.

    .venv/bin/python -m pytest benches/test_bench_control_plane.py --benchmark-only -s

- tick CPU: one tick (merge the reports, observe, decide, serialise the plan for publishing) timed on the ticking
  thread's CPU clock (``time.thread_time``) over 50 ticks, each after a round of N reports; floor: <= 50 ms;
- ingest: CPU per report (parse and check a 256-endpoint report, merge it), off the tick;
- delivery: 100 followers in a second process (``plane_followers.py``) on ``GET /v1/plan`` long-polls; per tick, the
  time from the start of the tick until 95% of them hold the plan; floor: p99 over 50 ticks <= 100 ms.
- HTTP intake: the same plane taking N clients' reports over HTTP (``plane_reporters.py``, a second process POSTing
  each client's report once per tick, spread over the interval) while it ticks: the plane process's CPU per second,
  tick CPU, and reports answered late (after an interval) or not at all; dense reports (every endpoint's counters
  change every tick: the worst case) and sparse ones (one endpoint changes per client per tick, as at 2 req/s).
In the first two the reports are fed to the Board in-process (``parse_report`` + ``ingest``, the work the HTTP
handler does after reading the body), so the tick figure is the plane's own.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import numpy as np
import pytest

from tritonmix import Fleet
from tritonmix.control_plane import ControlPlane, parse_report
from tritonmix.controller.signals import NullSource

N_ENDPOINTS = 256
INTERVAL_S = 0.5
#: after a tick the bench leaves the plane this long to deliver before it builds the next round of reports (building
#: 1,000 reports in the bench's thread takes longer than an interval, and is not the plane's work)
DELIVERY_WINDOW_S = 0.25
POOLS = (("inf2", 0.76, 10.0), ("trn1", 1.34, 19.0), ("g5", 1.01, 12.0), ("cpu", 0.36, 0.2))


def synthetic_fleet() -> Fleet:
    endpoints = [{"name": f"{pool}-{k:03d}", "url": f"127.0.0.1:{10000 + k}", "accelerator": pool,
                  "price_per_hour": price, "max_rps": rps}
                 for k in range(N_ENDPOINTS) for pool, price, rps in (POOLS[k % len(POOLS)],)]
    return Fleet.from_dict({"endpoints": endpoints, "slo_ms": 1500, "mode": "auto",
                            "controller": {"interval_s": INTERVAL_S}})


class SimClients:
    """N clients with one (model, interactive) dispatcher each; every round each sends ~``rps`` x interval requests
    spread by weight over the endpoints, with latencies around the pool's service time."""

    def __init__(self, count: int, names: List[str], fingerprint: str, rps: float = 2.0, seed: int = 1) -> None:
        self.count, self.names, self.fingerprint, self.rps = count, names, fingerprint, rps
        self.rng = np.random.default_rng(seed)
        n = len(names)
        self.ok = np.zeros((count, n), np.int64)
        self.arrivals = np.zeros(count, np.int64)
        self.seq = 0
        self.service = np.array([1.0 / POOLS[k % len(POOLS)][2] for k in range(n)])

    def round(self) -> Iterator[bytes]:
        n = len(self.names)
        self.seq += 1
        grown = self.rng.poisson(self.rps * INTERVAL_S / n, size=(self.count, n))
        self.ok += grown
        self.arrivals += grown.sum(axis=1)
        in_flight = self.rng.binomial(1, 0.02, size=(self.count, n))
        for c in range(self.count):
            ok = self.ok[c].tolist()
            latency = [None if not x else float(s) for x, s in zip(ok, self.service)]
            body = {"v": 1, "client": f"sim/{c}", "fleet": self.fingerprint, "seq": self.seq, "plan_age_s": 0.2,
                    "endpoint": {"ok": ok, "over_slo": [0] * n, "failed": [0] * n},
                    "keys": [{"model": "sd", "class": "interactive", "arrivals": int(self.arrivals[c]),
                              "successes": ok, "failures": [0] * n, "in_flight": in_flight[c].tolist(),
                              "latency_s": latency}], "ejected": []}
            yield json.dumps(body, separators=(",", ":")).encode()


def _plane() -> ControlPlane:
    fleet = synthetic_fleet()
    return ControlPlane(fleet, signal_source=NullSource(N_ENDPOINTS)).start(tick=False)


def _ingest(plane: ControlPlane, sims: SimClients) -> float:
    """One round of reports into the plane; returns the CPU seconds per report."""
    bodies = list(sims.round())
    t = time.thread_time()
    for body in bodies:
        plane.board.ingest(parse_report(body, plane.names, plane.fingerprint))
    return (time.thread_time() - t) / len(bodies)


@pytest.mark.parametrize("clients", [100, 300, 1000])
def test_tick_cpu(benchmark: Any, clients: int) -> None:
    benchmark.group = "control plane tick (256 endpoints)"
    plane = _plane()
    sims = SimClients(clients, list(plane.names), plane.fingerprint)
    ingest: List[float] = []
    cpu: List[float] = []
    try:
        for _ in range(3):  # every client past its baseline report
            ingest.append(_ingest(plane, sims))
            plane.tick()

        def tick() -> None:
            t = time.thread_time()
            plane.tick()
            cpu.append(time.thread_time() - t)

        benchmark.pedantic(tick, setup=lambda: ingest.append(_ingest(plane, sims)), rounds=50, iterations=1)
    finally:
        plane.stop()
    ms = np.array(cpu) * 1e3
    benchmark.extra_info.update(clients=clients, tick_cpu_ms_p50=float(np.median(ms)),
                                tick_cpu_ms_p99=float(np.percentile(ms, 99)), tick_cpu_ms_max=float(ms.max()),
                                ingest_cpu_us_per_report=float(np.median(ingest) * 1e6))
    print(f"\n{clients} clients x {N_ENDPOINTS} endpoints: tick CPU p50 {np.median(ms):.1f} ms, p99 "
          f"{np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms; ingest {np.median(ingest) * 1e6:.0f} us CPU "
          f"per report")
    assert ms.max() <= 50.0


@pytest.mark.parametrize("clients", [100, 1000])
def test_plan_delivery_to_100_followers(benchmark: Any, clients: int, tmp_path: Path) -> None:
    benchmark.group = "control plane delivery (100 followers)"
    plane = _plane()
    sims = SimClients(clients, list(plane.names), plane.fingerprint)
    ticks = 50
    out = tmp_path / "receipts.json"
    followers = None
    started = {}
    try:
        for _ in range(2):
            _ingest(plane, sims)
            plane.tick()
        followers = subprocess.Popen([sys.executable, str(Path(__file__).with_name("plane_followers.py")),
                                      plane.url, "100", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert followers.stdout.readline().strip() == "ready"

        def run() -> None:
            for _ in range(ticks):
                _ingest(plane, sims)  # the reports land before the tick, as the clients time them
                t0 = time.monotonic()
                plan = plane.tick()
                started[plan.generation] = t0
                time.sleep(max(DELIVERY_WINDOW_S, INTERVAL_S - (time.monotonic() - t0)))

        benchmark.pedantic(run, rounds=1, iterations=1)
        followers.stdin.close()
        assert followers.wait(timeout=60) == 0
    finally:
        if followers is not None and followers.poll() is None:
            followers.kill()
        plane.stop()
    receipts = json.loads(out.read_text())["receipts"]
    per_tick = []
    for generation, t0 in started.items():
        got = sorted(t - t0 for _, g, t in receipts if g == generation)
        assert len(got) >= 95, f"plan {generation} reached {len(got)} of 100 followers"
        per_tick.append(got[94])  # the 95th follower's receipt: 95% hold the plan
    ms = np.array(per_tick) * 1e3
    p99 = float(np.percentile(ms, 99))
    benchmark.extra_info.update(clients=clients, followers=100, ticks=len(per_tick),
                                reach_95pct_ms_p50=float(np.median(ms)), reach_95pct_ms_p99=p99)
    print(f"\n{clients} reporting clients, 100 followers: 95% hold a new plan {np.median(ms):.1f} ms (p50), "
          f"{p99:.1f} ms (p99 over {len(per_tick)} ticks) after the tick starts")
    assert p99 <= 100.0


@pytest.mark.parametrize("clients, reports", [(100, "dense"), (1000, "dense"), (1000, "sparse")])
def test_http_intake_while_ticking(benchmark: Any, clients: int, reports: str, tmp_path: Path) -> None:
    benchmark.group = "control plane HTTP intake (256 endpoints)"
    plane = _plane()
    out = tmp_path / "tally.json"
    reporters = None
    cpu: List[float] = []
    seconds = 20.0
    try:
        reporters = subprocess.Popen([sys.executable, str(Path(__file__).with_name("plane_reporters.py")), plane.url,
                                      str(clients), str(INTERVAL_S), plane.fingerprint, str(N_ENDPOINTS), reports,
                                      str(out)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert reporters.stdout.readline().strip() == "ready"
        process_cpu = {}

        def run() -> None:
            process_cpu["start"] = time.process_time()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0, c0 = time.monotonic(), time.thread_time()
                plane.tick()
                cpu.append(time.thread_time() - c0)
                time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - t0)))
            process_cpu["end"] = time.process_time()

        benchmark.pedantic(run, rounds=1, iterations=1)
        reporters.stdin.close()
        assert reporters.wait(timeout=60) == 0
        clients_seen = plane.board.client_count
    finally:
        if reporters is not None and reporters.poll() is None:
            reporters.kill()
        plane.stop()
    tally = json.loads(out.read_text())
    ms = np.array(cpu) * 1e3
    cores = (process_cpu["end"] - process_cpu["start"]) / seconds
    benchmark.extra_info.update(clients=clients, reports=reports, plane_cores=cores,
                                tick_cpu_ms_p99=float(np.percentile(ms, 99)), **tally)
    print(f"\n{clients} clients reporting over HTTP every {INTERVAL_S} s ({reports} reports): the plane process used {cores:.2f} cores; "
          f"tick CPU p50 {np.median(ms):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms; {tally['sent']} reports, "
          f"{tally['failed']} failed, {tally['late']} answered after more than an interval")
    assert tally["failed"] == 0 and clients_seen == clients
    if clients <= 100:
        assert np.percentile(ms, 99) <= 50.0 and tally["late"] <= 0.01 * tally["sent"]
    # 1,000 clients: 2,000 reports and 2,000 plan answers (28 KB each at 256 endpoints) a second saturate the
    # plane's one Python core on this 2-core machine (the reporters use the other): recorded, not a floor here
