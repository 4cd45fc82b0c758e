"""Discovery's own costs, against FakeApiServer through the real kubernetes client (no Triton server):

    flock /tmp/tritonmix-bench.lock .venv/bin/python -m pytest benches/test_bench_k8s_discovery.py -s -p no:cacheprovider

- sync: 1,000 endpoints (10 pools, one 100-endpoint slice each, listed in chunks of 500): time from ``start()`` to the
  first whole set, for the first source in the process (which imports the client's modules) and a second one;
- change: 100 slice updates one at a time (an endpoint joins or leaves), time from the API server's write to the
  ``on_change`` that holds it: p50, p99, max; floor: p99 < 0.5 s (one controller interval);
- relist: a compaction ends both watches with 410; time until both kinds are listed again (the set is unchanged, so
  no ``on_change``).
Figures and the machine they came from: benches/results/k8s-discovery.md.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import numpy as np

from tritonmix.k8s.discovery import KubernetesSource
from tritonmix.k8s.fakeapi import FakeApiServer
from tritonmix.k8s.fakeobjects import SliceAddress, endpoint_slice, pool_service
from tritonmix.k8s.settings import KubernetesSettings

NS = "bench"
POOLS = 10
PER_POOL = 100


def _slice(pool: str, count: int) -> Dict[str, Any]:
    k = int(pool[4:])
    return endpoint_slice(NS, f"{pool}-a", pool, [SliceAddress(f"{pool}-{i}", f"10.{k}.{i // 250}.{i % 250 + 1}")
                                                  for i in range(count)])


def test_discovery_sync_change_and_relist() -> None:
    with FakeApiServer(bookmark_interval_s=60.0) as api:
        for k in range(POOLS):
            api.apply(pool_service(NS, f"pool{k}", fleet="b", price_per_hour=1.0))
            api.apply(_slice(f"pool{k}", PER_POOL))
        sets: List[tuple] = []
        arrived = threading.Condition()

        def on_change(states: Any) -> None:
            with arrived:
                sets.append((time.perf_counter(), len(states)))
                arrived.notify_all()

        def wait_for(count: int, after: int) -> float:
            with arrived:
                arrived.wait_for(lambda: any(n == count for _, n in sets[after:]), 10.0)
                return next(t for t, n in sets[after:] if n == count)

        settings = KubernetesSettings(namespace=NS, fleet="b", kubeconfig=str(api.kubeconfig_path()), page_size=500)
        syncs_s = []
        for _ in range(2):  # the first in a process also imports the client's modules
            source = KubernetesSource(settings)
            seen = len(sets)
            t0 = time.perf_counter()
            source.start(on_change)
            syncs_s.append(wait_for(POOLS * PER_POOL, seen) - t0)
            if not syncs_s[1:]:
                source.stop()

        latencies = []
        for step in range(100):
            count = PER_POOL + 1 if step % 2 == 0 else PER_POOL  # one joins, then it leaves
            seen = len(sets)
            t0 = time.perf_counter()
            api.apply(_slice("pool3", count))
            latencies.append(wait_for(POOLS * PER_POOL + (count - PER_POOL), seen) - t0)

        lists = source.counters["lists"]
        t0 = time.perf_counter()
        api.compact()
        deadline = time.monotonic() + 10.0
        while source.counters["lists"] < lists + 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        relist_s = time.perf_counter() - t0
        source.stop()

    ms = np.array(latencies) * 1000
    print(f"\nsync of {POOLS * PER_POOL} endpoints: {syncs_s[0] * 1000:.0f} ms in a new process (importing the client "
          f"included), {syncs_s[1] * 1000:.0f} ms after; change -> on_change over {len(ms)} changes: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms; relist of both kinds after a 410: "
          f"{relist_s * 1000:.0f} ms")
    assert np.percentile(ms, 99) < 500.0
