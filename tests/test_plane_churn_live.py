"""Live: a control plane whose fleet names ``endpoints: {kubernetes: ...}`` follows a pool announced through
FakeApiServer (real kubernetes client, real Triton servers whose model EMULATES an inf2 unit at time_scale 0.1: 67 ms,
two at a time), with a standby replica watching the same API, and two clients (HTTP, then gRPC) that follow the plane
(and get their endpoints from it) while the pool is scaled 1 -> 3 -> 1 under load: no request fails, the newcomers
take the followers' traffic within one interval, the two that turn terminating finish what they hold and get nothing
new, then leave; the plane's /metrics follows the set; the leader stops and the standby, which holds the same set,
takes over; the standby stops too, and each follower's own source and controller take a pod announced then."""
from __future__ import annotations

import importlib
import logging
import re
import threading
import time
import urllib.request
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest

pytest.importorskip("kubernetes")

from tritonmix import Fleet  # noqa: E402
from tritonmix.control_plane import ControlPlane  # noqa: E402
from tritonmix.k8s import labels  # noqa: E402
from tritonmix.k8s.fakeapi import FakeApiServer  # noqa: E402
from tritonmix.k8s.fakeobjects import pool_service  # noqa: E402
from tritonmix.local import LocalFleet  # noqa: E402
from k8s_live_support import INTERVAL_S, MODEL, NS, PODS, SERVERS, pod_slice, reports, wait  # noqa: E402

class Load:
    """Closed-loop senders, ``threads`` per client: each sends the next request when its last one is answered."""

    def __init__(self, clients: List[Any], module: Any, threads: int = 3) -> None:
        self.module = module
        self.sent = 0
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in clients for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10.0)

    def _run(self, client: Any) -> None:
        prompt = self.module.InferInput("prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
        while not self._stop.is_set():
            try:
                client.infer(MODEL, [prompt])
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the test asserts none
                with self._lock:
                    self.errors.append(exc)
            with self._lock:
                self.sent += 1


def metrics(plane: ControlPlane) -> Dict[str, Any]:
    """The plane's /metrics: desired replicas per pool and the endpoints with a scrape series."""
    with urllib.request.urlopen(plane.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    desired = {m.group(1): float(m.group(2))
               for m in re.finditer(r'^tritonmix_plane_desired_replicas\{pool="([^"]+)"\} (\S+)$', text, re.M)}
    scraped = {m.group(1).split("/")[-1]
               for m in re.finditer(r'^tritonmix_plane_scrapes_total\{endpoint="([^"]+)"\}', text, re.M)}
    return {"desired": desired, "scraped": scraped}


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(SERVERS)) as local:
        yield local


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_plane_and_its_followers_follow_a_pool_scaled_1_3_1_under_load(servers: LocalFleet, protocol: str,
                                                                          caplog: Any) -> None:
    caplog.set_level(logging.ERROR)
    module = importlib.import_module(f"tritonmix.{protocol}")
    urls = {pod: (getattr(servers.endpoints[pod], f"{protocol}_url"), servers.endpoints[pod].metrics_url)
            for pod in PODS}
    with FakeApiServer(token="t") as api:
        api.apply(pool_service(NS, "inf2", fleet="sd", price_per_hour=0.7582, accelerator="neuron",
                               **{labels.MAX_CONCURRENCY_ANNOTATION: "2"}))
        api.apply(pod_slice(PODS[0], *urls[PODS[0]], protocol=protocol))
        fleet = Fleet.from_dict({
            "slo_ms": 1000, "controller": {"interval_s": INTERVAL_S},
            "endpoints": {"kubernetes": {"namespace": NS, "fleet": "sd", "kubeconfig": str(api.kubeconfig_path()),
                                         "protocol": protocol, "backoff_initial_s": 0.05, "backoff_max_s": 0.5}}})
        leader = ControlPlane(fleet).start()
        standby = ControlPlane(fleet, replicas=[leader.address, "127.0.0.1:0"]).start()
        replicas = [leader.address, standby.address]
        standby.replicas = tuple(replicas)
        clients = [module.InferenceServerClient(fleet=fleet, control_plane=replicas, seed=k) for k in range(2)]
        try:
            assert wait(lambda: all(c.controller.following == leader.url and PODS[0] in reports(c)
                                    for c in clients), 10.0), "the followers never got the plane's first endpoint"
            with Load(clients, module) as load:
                assert wait(lambda: all(reports(c)[PODS[0]].succeeded >= 5 for c in clients), 10.0)
                time.sleep(1.0)  # a pool that has served a while: its capacity is measured, a newcomer starts from it
                one = metrics(leader)
                assert one["scraped"] == {PODS[0]} and one["desired"].get("inf2", 0) >= 1, one

                # 1 -> 3: each follower's newcomers take traffic within one interval of their announcement
                joined_at = time.monotonic()
                for pod in PODS[1:]:
                    api.apply(pod_slice(pod, *urls[pod], protocol=protocol))
                join_s: Dict[str, Any] = {}
                for k, c in enumerate(clients):
                    for pod in PODS[1:]:
                        known = wait(lambda: pod in reports(c), 5.0)
                        took = wait(lambda: reports(c)[pod].attempts > 0, 5.0)
                        assert known is not None and took is not None, f"{pod} never took traffic from follower {k}"
                        join_s[f"{k}:{pod}"] = (round(known - joined_at, 3), round(took - joined_at, 3))
                assert max(t for _, t in join_s.values()) < INTERVAL_S, f"(known, first request) after the join (s): {join_s}"
                time.sleep(1.5)
                three = metrics(leader)
                assert three["scraped"] == set(PODS) and "inf2" in three["desired"], three
                assert standby.status()["endpoints_version"] >= 2 and len(standby.status()["endpoints"]) == 3
                assert sum(x is not None for x in standby.source.latest) == 3  # the leader's samples, by name

                # 3 -> 1: two turn terminating: they finish what they hold and take nothing new
                draining = PODS[1:]
                applied = [c.controller.sets_applied for c in clients]
                drain_at = time.monotonic()
                for pod in draining:
                    api.apply(pod_slice(pod, *urls[pod], terminating=True, protocol=protocol))
                assert wait(lambda: all(c.controller.sets_applied > a for c, a in zip(clients, applied)), INTERVAL_S)
                drained_s = round(time.monotonic() - drain_at, 3)
                time.sleep(0.3)  # a request picked before the mask may still start
                picks = [{pod: reports(c)[pod].attempts for pod in draining} for c in clients]
                assert wait(lambda: all(reports(c)[p].in_flight == 0 for c in clients for p in draining), 5.0)
                time.sleep(1.0)
                for c, before in zip(clients, picks):
                    after = reports(c)
                    for pod in draining:
                        assert after[pod].attempts == before[pod], f"{pod} got new requests while terminating"
                        assert after[pod].succeeded == after[pod].attempts and after[pod].failed == 0

                # ... then their slices go: they leave every follower's dispatchers and the plane's view
                for pod in draining:
                    api.delete("EndpointSlice", NS, f"inf2-{pod}")
                assert wait(lambda: all(set(reports(c)) == {PODS[0]} for c in clients), 5.0)
                assert wait(lambda: metrics(leader)["scraped"] == {PODS[0]}, 3.0), metrics(leader)
                served = [reports(c)[PODS[0]].succeeded for c in clients]
                assert wait(lambda: all(reports(c)[PODS[0]].succeeded >= s + 5 for c, s in zip(clients, served)), 5.0)
                back = metrics(leader)

                # the leader stops: the followers follow the standby, which watched the same API
                leader.stop()
                assert wait(lambda: all(c.controller.following == standby.url for c in clients), 3.0)
                assert [r["name"].split("/")[-1] for r in standby.status()["endpoints"]] == [PODS[0]]
                served = [reports(c)[PODS[0]].succeeded for c in clients]
                assert wait(lambda: all(reports(c)[PODS[0]].succeeded >= s + 5 for c, s in zip(clients, served)), 5.0)

                # no plane at all: each follower's own controller decides and its own source keeps the set
                standby.stop()
                assert wait(lambda: all(c.controller.local is not None for c in clients), 3.0)
                announced = time.monotonic()
                api.apply(pod_slice(PODS[1], *urls[PODS[1]], protocol=protocol))
                alone = wait(lambda: all(PODS[1] in reports(c) and reports(c)[PODS[1]].attempts > 0 for c in clients),
                             5.0)
                assert alone is not None, "a pod announced while no plane answers never took the followers' traffic"
                alone_s = round(alone - announced, 3)
            assert load.errors == [], f"{len(load.errors)} of {load.sent} requests failed: {load.errors[:3]}"
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors == [], errors  # no tick, set or listener failed on the way
            print(f"\nsent {load.sent}, failed 0; newcomers (known, first request) per follower after the announcement (s): "
                  f"{join_s}; terminating applied by both followers {drained_s} s after its announcement; "
                  f"desired replicas 1 / 3 / 1 endpoints: {one['desired']} / {three['desired']} / {back['desired']}; "
                  f"with no plane, a pod announced took both followers' traffic after {alone_s} s")
        finally:
            for c in clients:
                c.close()
            leader.stop()
            standby.stop()
