"""What the live Kubernetes tests share (tests/test_k8s_live.py, tests/test_plane_churn_live.py): the pool of
three local Tritons EMULATING an inf2 unit, the EndpointSlice that announces one of them through FakeApiServer, and
small waits."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from tritonmix.k8s.fakeobjects import SliceAddress, endpoint_slice

NS = "inference"
INTERVAL_S = 0.5
MODEL = "stable_diffusion"
PODS = ("inf2-0", "inf2-1", "inf2-2")
SERVERS = {
    "time_scale": 0.1,
    "endpoints": [{"name": pod, "accelerator": "neuron", "price_per_hour": 0.7582, "max_concurrency": 2,
                   "profile": {"base": "inf2.xlarge", "concurrency": 2}} for pod in PODS],
}


def pod_slice(pod: str, url: str, metrics_url: str, terminating: bool = False,
              protocol: str = "http") -> Dict[str, Any]:
    """One slice per pod: the local servers share 127.0.0.1 and differ by port, and a slice's ports are its own."""
    host, port = url.rsplit(":", 1)
    ports: Dict[str, Any] = {"http": None, "grpc": None, protocol: int(port)}
    return endpoint_slice(NS, f"inf2-{pod}", "inf2", [SliceAddress(pod, host, terminating=terminating)],
                          metrics=int(metrics_url.rsplit(":", 1)[1]), **ports)


def reports(client: Any) -> Dict[str, Any]:
    return {r.name.split("/")[-1]: r for r in client.endpoint_reports()}


def wait(predicate: Any, timeout_s: float, step_s: float = 0.005) -> Optional[float]:
    """The time ``predicate()`` first held, polling every ``step_s``; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step_s)
    return None
