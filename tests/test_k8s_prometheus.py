"""Each rendered ScaledObject's exact query, run by a real Prometheus (Debian's ``prometheus``) that scrapes two real
control plane replicas while a local fleet is under load, returns that pool's desired replicas; and the HPA
arithmetic the ScaledObject asks for (AverageValue, threshold "1") turns it into exactly that many replicas.

Prometheus stamps each sample with the time its scrape started and records how long the scrape took
(``scrape_duration_seconds``); every plane tick is recorded here with its wall time, so the figure a scrape saw is
the one of the last tick before its stamp or one of a tick during the scrape (within AMBIGUOUS_S either side: the
tick's wall time is taken by its listener). The query's value must be the maximum of one figure each replica's
scrape could have seen; a stamp with no tick before it is not judged.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import pytest
import yaml

import tritonmix.http as httpclient
from tritonmix import Fleet
from tritonmix.control_plane import ControlPlane
from tritonmix.k8s.render import render
from tritonmix.local import LocalFleet

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (make test installs "
                                "Debian's prometheus package with apt-get)")

INTERVAL_S = 0.25
CALLERS = 3
SCRAPE_S = 0.5
AMBIGUOUS_S = 0.06
#: scrapes of each replica judged per pool, within the newest WINDOW_S seconds
SCRAPES = 12
WINDOW_S = 30
FLEET = {
    "slo_ms": 400, "time_scale": 0.1, "mode": "cost",
    "controller": {"interval_s": INTERVAL_S, "dwell_s": 0.5},
    "endpoints": [
        {"name": "inf2-a", "pool": "inf2", "accelerator": "neuron", "instance_type": "inf2.xlarge",
         "price_per_hour": 0.7582, "max_concurrency": 1, "profile": {"base": "inf2.xlarge", "concurrency": 1}},
        {"name": "trn1-a", "pool": "trn1", "accelerator": "neuron", "instance_type": "trn1.2xlarge",
         "price_per_hour": 1.3438, "max_concurrency": 4, "profile": {"base": "trn1.2xlarge", "concurrency": 4}},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


class Prometheus:
    """A real Prometheus on 127.0.0.1 scraping ``targets`` every SCRAPE_S, its storage under ``tmp``."""

    def __init__(self, tmp: Path, targets: List[str]) -> None:
        config = {"global": {"scrape_interval": f"{int(SCRAPE_S * 1000)}ms", "scrape_timeout": "400ms"},
                  "scrape_configs": [{"job_name": "tritonmix-plane", "static_configs": [{"targets": targets}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address={self.url[len('http://'):]}"], stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, promql: str, at: float) -> List[Dict[str, Any]]:
        body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def samples(self, metric: str, window_s: int) -> List[Tuple[Dict[str, str], List[Tuple[float, float]]]]:
        result = self.query(f"{metric}[{window_s}s]", time.time())
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in result]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited; see its log"
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Ticks:
    """Every tick of a plane: (wall time, desired replicas per pool)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.rows: List[Tuple[float, Dict[str, int]]] = []
        plane.controller.add_listener(lambda snap: self.rows.append((time.time(), dict(snap.desired_replicas))))

    def seen(self, start: float, end: float, pool: str) -> Optional[Set[Any]]:
        """The figures a scrape that read the plane between ``start`` and ``end`` can have seen (the last tick's
        before it, and every tick's during it, AMBIGUOUS_S either side); None before the first tick."""
        before = [d.get(pool) for t, d in self.rows if t < start - AMBIGUOUS_S]
        during = {d.get(pool) for t, d in self.rows if start - AMBIGUOUS_S <= t <= end + AMBIGUOUS_S}
        if not before and not during:
            return None
        return during | set(before[-1:])


def hpa_replicas(metric: float, threshold: float, low: int, high: int) -> int:
    """The HPA on an external metric with an AverageValue target (what KEDA creates for the trigger): it divides the
    metric by the current replicas R and scales by the ratio to the target, so R cancels: ceil(metric / target),
    then clamped to [minReplicaCount, maxReplicaCount]."""
    return min(high, max(low, math.ceil(metric / threshold - 1e-9)))


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(FLEET)) as local:
        yield local


def _load(client: Any, stop: threading.Event, failed: List[str]) -> None:
    """Requests back to back through ``client`` until ``stop``; failures are collected."""
    prompt = httpclient.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
    while not stop.is_set():
        try:
            client.infer("stable_diffusion", [prompt])
        except Exception as exc:  # noqa: BLE001 - the test shows them
            failed.append(f"{type(exc).__name__}: {exc}")


def test_each_scaledobject_query_returns_its_pools_desired_replicas(fleet: LocalFleet, tmp_path: Path) -> None:
    leader = ControlPlane(fleet.fleet).start()
    standby = ControlPlane(fleet.fleet, replicas=[leader.address]).start()  # listed after the leader: stands by
    by_address = {leader.address: Ticks(leader), standby.address: Ticks(standby)}
    out = render(fleet.fleet, tmp_path / "manifests", namespace="ml", triton_image="triton:test",
                 model_repository="s3://bucket/{accelerator}", plane_image="tritonmix:test",
                 prometheus_url="http://127.0.0.1:9", prometheus_namespace="monitoring", max_replicas=6,
                 fleet_name="sd")
    scaled = {p: yaml.safe_load((out.out_dir / f"{out.names[p]}-scaledobject.yaml").read_text())
              for p in ("inf2", "trn1")}
    prometheus = Prometheus(tmp_path, [leader.address, standby.address])
    clients = [httpclient.InferenceServerClient(fleet=fleet.fleet, control_plane=[leader.address], seed=k)
               for k in range(4)]
    stop, failed = threading.Event(), []
    # more callers than slots (CALLERS per client): every slot stays busy, so the fleet-wide rate on each pool is its
    # capacity and the plane asks for more than one replica of it (ceil(mu / (0.8 mu)) = 2)
    pool = concurrent.futures.ThreadPoolExecutor(CALLERS * len(clients))
    futures = [pool.submit(_load, c, stop, failed) for c in clients for _ in range(CALLERS)]
    try:
        prometheus.wait_ready()
        assert standby.role == "standby"
        deadline = time.monotonic() + 40.0
        while True:  # until every replica has been scraped SCRAPES times for both pools (a loaded machine is slower)
            counts = [len(v) for _, v in prometheus.samples("tritonmix_plane_desired_replicas", WINDOW_S)]
            if len(counts) == 2 * len(scaled) and min(counts) >= SCRAPES:
                break
            assert time.monotonic() < deadline, f"too few scrapes: {counts}"
            time.sleep(0.5)
        judged: List[Tuple[str, float, float, int]] = []
        for name, obj in scaled.items():
            (trigger,) = obj["spec"]["triggers"]
            meta = trigger["metadata"]
            assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
            low, high = obj["spec"]["minReplicaCount"], obj["spec"]["maxReplicaCount"]
            # each replica's scrape stamps; the query at time ts sees each replica's newest sample at or before ts
            series = {labels["instance"]: [t for t, _ in values]
                      for labels, values in prometheus.samples("tritonmix_plane_desired_replicas", WINDOW_S)
                      if labels["pool"] == name}
            assert set(series) == set(by_address), f"{name}: series {sorted(series)}"
            took = {labels["instance"]: dict(values)
                    for labels, values in prometheus.samples("scrape_duration_seconds", WINDOW_S)}
            for ts in sorted(t for stamps in series.values() for t in stamps):
                figures = []
                for address, stamps in series.items():
                    seen = max((t for t in stamps if t <= ts), default=None)
                    figures.append(None if seen is None else
                                   by_address[address].seen(seen, seen + took[address].get(seen, 0.0), name))
                if None in figures or any(None in f for f in figures):
                    continue
                maxima = {max(combo) for combo in itertools.product(*figures)}
                (row,) = prometheus.query(meta["query"], ts)  # one series: the query must reduce to one value
                value = float(row["value"][1])
                assert value in maxima, (name, ts, value, figures)
                assert hpa_replicas(value, float(meta["threshold"]), low, high) == min(high, max(low, int(value)))
                judged.append((name, ts, value, len(maxima)))
        per_pool = {p: [v for n, _, v, _ in judged if n == p] for p in scaled}
        print("\njudged scrapes per pool:", {p: len(v) for p, v in per_pool.items()},
              "of which with one possible value:", {p: sum(1 for n, _, _, k in judged if n == p and k == 1)
                                                    for p in scaled},
              "figures seen:", {p: sorted(set(v)) for p, v in per_pool.items()})
        assert all(len(v) >= 5 for v in per_pool.values()), per_pool
        assert max(max(v) for v in per_pool.values()) >= 2  # a load that needs more than one replica somewhere
        status = _get(f"http://{leader.address}/v1/status")
        assert set(status["desired_replicas"]) == set(scaled)
    finally:
        stop.set()
        for f in futures:
            f.result(timeout=30)
        pool.shutdown()
        for c in clients:
            c.close()
        prometheus.stop()
        standby.stop()
        leader.stop()
    assert failed == []
