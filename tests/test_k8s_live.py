"""Live: a client (HTTP and gRPC) whose fleet names ``endpoints: {kubernetes: ...}`` follows a pool announced
through FakeApiServer (real kubernetes client, real Triton servers whose model EMULATES an inf2 unit at time_scale
0.1: 67 ms, two at a time) while it is scaled 1 -> 3 -> 1 under load: no request fails, the newcomers take traffic
within one controller interval, the two that turn terminating finish what they hold and get nothing new, then
leave."""
from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest

pytest.importorskip("kubernetes")

from tritonmix import Fleet  # noqa: E402
from tritonmix.k8s import labels  # noqa: E402
from tritonmix.k8s.fakeapi import FakeApiServer  # noqa: E402
from tritonmix.k8s.fakeobjects import pool_service  # noqa: E402
from tritonmix.local import LocalFleet  # noqa: E402
from k8s_live_support import INTERVAL_S, MODEL, NS, PODS, SERVERS, pod_slice, reports, wait  # noqa: E402

class Load:
    """Closed-loop senders: each thread sends the next request when its last one is answered."""

    def __init__(self, client: Any, module: Any, threads: int = 4) -> None:
        self.client = client
        self.module = module
        self.sent = 0
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10.0)

    def _run(self) -> None:
        prompt = self.module.InferInput("prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
        while not self._stop.is_set():
            try:
                self.client.infer(MODEL, [prompt])
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the test asserts none
                with self._lock:
                    self.errors.append(exc)
            with self._lock:
                self.sent += 1


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(SERVERS)) as local:
        yield local


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_pool_scaled_1_3_1_under_load_through_the_kubernetes_api(servers: LocalFleet, protocol: str) -> None:
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
                                         "protocol": protocol,
                                         "backoff_initial_s": 0.05, "backoff_max_s": 0.5}}})
        with module.InferenceServerClient(fleet=fleet, seed=3) as client:
            assert wait(lambda: PODS[0] in reports(client), 10.0), "the first endpoint was never discovered"
            with Load(client, module) as load:
                assert wait(lambda: reports(client)[PODS[0]].succeeded >= 5, 10.0)
                time.sleep(1.0)  # a pool that has served a while: its capacity is measured, a newcomer starts from it

                # 1 -> 3: the newcomers take traffic within one interval of their announcement
                joined_at = time.monotonic()
                join_s: Dict[str, Any] = {}
                for pod in PODS[1:]:
                    api.apply(pod_slice(pod, *urls[pod], protocol=protocol))
                for pod in PODS[1:]:
                    known = wait(lambda: pod in reports(client), 5.0)
                    took = wait(lambda: reports(client)[pod].attempts > 0, 5.0)
                    assert known is not None and took is not None, f"{pod} never took traffic"
                    join_s[pod] = (round(known - joined_at, 3), round(took - joined_at, 3))
                    assert took - joined_at < INTERVAL_S, f"{pod} took traffic {join_s[pod]} s after it joined"
                time.sleep(1.5)

                # 3 -> 1: two turn terminating: they finish what they hold and take nothing new
                draining = PODS[1:]
                for pod in draining:
                    api.apply(pod_slice(pod, *urls[pod], terminating=True, protocol=protocol))
                held = {pod: reports(client)[pod].in_flight for pod in draining}
                time.sleep(0.3)  # discovery delivers in milliseconds; a request picked before the mask may start
                picks = {pod: reports(client)[pod].attempts for pod in draining}
                assert wait(lambda: all(reports(client)[p].in_flight == 0 for p in draining), 5.0)
                time.sleep(1.0)
                after = reports(client)
                for pod in draining:
                    assert after[pod].attempts == picks[pod], f"{pod} got new requests while terminating"
                    assert after[pod].succeeded == after[pod].attempts and after[pod].failed == 0

                # ... then their slices go: they leave every dispatcher, the pool runs on the first
                for pod in draining:
                    api.delete("EndpointSlice", NS, f"inf2-{pod}")
                assert wait(lambda: set(reports(client)) == {PODS[0]}, 5.0)
                served = reports(client)[PODS[0]].succeeded
                assert wait(lambda: reports(client)[PODS[0]].succeeded >= served + 5, 5.0)
            assert load.errors == [], f"{len(load.errors)} of {load.sent} requests failed: {load.errors[:3]}"
            print(f"\nsent {load.sent}, failed 0; (known to the client, first request) after the announcement (s): "
                  f"{join_s}; in flight on "
                  f"the drained endpoints when they turned terminating: {held}")
