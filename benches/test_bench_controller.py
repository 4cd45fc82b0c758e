"""CPU cost of one controller tick with 64 endpoints (issue 7 target: < 5 ms).

A 64-endpoint synthetic fleet (4 pools of 16: inf2, trn1, g5, cpu) runs in simulated time with interactive and batch
traffic on two models (4 dispatchers); every tick of the real Controller is timed with ``time.process_time`` (CPU,
this thread) while the simulation runs, so estimators, ejection, planning, weights for 4 dispatchers and the
snapshot all do real work. pytest-benchmark also times ``tick()`` on the warmed-up state.

    .venv/bin/python -m pytest benches/test_bench_controller.py --benchmark-only -q -s
"""
from __future__ import annotations

import statistics
import time
from typing import Any, List

from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.fleet import Fleet

N_PER_POOL = 16
TARGET_S = 0.005
POOLS = (("inf2", "neuron", 0.7582, 0.067, 14.9), ("trn1", "trainium", 1.3438, 0.051, 19.6),
         ("g5", "gpu", 1.006, 0.068, 14.7), ("c7i", "cpu", 0.357, 2.0, 0.5))


def fleet_64() -> Fleet:
    eps = [{"name": f"{name}-{k}", "url": f"10.0.{p}.{k + 1}:8000", "accelerator": acc, "price_per_hour": price,
            "max_rps": rps, "max_concurrency": 1}
           for p, (name, acc, price, _, rps) in enumerate(POOLS) for k in range(N_PER_POOL)]
    return Fleet.from_dict({"endpoints": eps, "slo_ms": 150, "controller": {"interval_s": 0.5}})


def build() -> Simulation:
    models = [ServerModel(service_s) for _, _, _, service_s, _ in POOLS for _ in range(N_PER_POOL)]
    return Simulation.build(fleet_64(), models, seed=7)


RATES = {("sd", "interactive"): 150.0, ("sd", "batch"): 20.0, ("tiny", "interactive"): 30.0, ("tiny", "batch"): 5.0}


def test_tick_cpu_at_64_endpoints(benchmark: Any) -> None:
    sim = build()
    tick = sim.controller.tick
    cpu_s: List[float] = []

    def timed() -> Any:
        t0 = time.process_time()
        plan = tick()
        cpu_s.append(time.process_time() - t0)
        return plan

    sim.controller.tick = timed  # type: ignore[method-assign]
    sim.run(20.0, RATES)
    sim.controller.tick = tick  # type: ignore[method-assign]
    steady = sorted(cpu_s[4:])
    median_s = statistics.median(steady)
    p95_s = steady[int(0.95 * (len(steady) - 1))]
    print(f"\ncontroller tick, 64 endpoints, {len(sim.router.dispatchers())} dispatchers: "
          f"median {median_s * 1e3:.2f} ms CPU, p95 {p95_s * 1e3:.2f} ms CPU over {len(steady)} ticks")
    benchmark.extra_info.update(median_cpu_ms=median_s * 1e3, p95_cpu_ms=p95_s * 1e3)
    benchmark(tick)
    assert median_s < TARGET_S, f"median tick {median_s * 1e3:.2f} ms CPU >= {TARGET_S * 1e3:.0f} ms"
