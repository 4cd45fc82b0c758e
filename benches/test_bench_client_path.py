"""What tritonmix adds per request in Python and the compiled lane, with the network taken out: each drop-in
client's ``infer`` against endpoint clients that answer at once (``endpoint_client_factory=``). The figure is the
whole request path (lane lookup, begin, pick, the stub's call, succeeded), hot in the caches; the real-server
comparison with tritonclient is ``test_bench_clients.py``.

    .venv/bin/python -m pytest benches/test_bench_client_path.py --benchmark-only
"""
from __future__ import annotations

from typing import Any

import pytest

import tritonmix.grpc
import tritonmix.http
from tritonmix.fleet import Fleet


class Answering:
    """A tritonclient client whose infer returns at once."""

    def infer(self, *args: Any, **kwargs: Any) -> None:
        return None

    def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_path_with_answering_endpoints(benchmark: Any, protocol: str) -> None:
    benchmark.group = "client infer path (endpoints stubbed)"
    fleet = Fleet.from_urls("127.0.0.1:9,127.0.0.1:10", protocol=protocol, controller={"enabled": False})
    stubs = {e.url: Answering() for e in fleet.endpoints}
    module = tritonmix.http if protocol == "http" else tritonmix.grpc
    with module.InferenceServerClient(fleet=fleet, endpoint_client_factory=stubs.__getitem__) as client:
        for _ in range(100):  # the lane exists after the first request
            client.infer("m", [])
        benchmark(client.infer, "m", [])
        assert sum(r.succeeded for r in client.endpoint_reports()) > 100
