"""Cost of one pick+record pair from Python, compiled build vs the Python twin, with a compiled no-op as the floor.

Run: .venv/bin/python -m pytest benches/test_bench_dispatch.py --benchmark-only

The lane group times one request's whole bookkeeping (``Lane``: begin, pick, succeeded), both builds.

Targets (issue 3; read them off the Median column, these are benchmarks, not timed tests): the Cython pair at 8
endpoints <= 250 ns, >= 15x faster than the twin, and the Cython pair at 1,024 endpoints <= 2x its 8-endpoint cost.
Each pair is one call of a small Python closure (``record(pick(), ...)``), so its figure includes that call; the
floor is a bare call of the compiled ``noop()``.
"""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import pytest

from tritonmix.dispatch_core import _dispatch_py

try:
    from tritonmix.dispatch_core import _dispatch_c
except ImportError:
    _dispatch_c = None

needs_compiled = pytest.mark.skipif(_dispatch_c is None, reason="compiled dispatch core not built")


def pair_fn(impl: ModuleType, n_endpoints: int) -> Callable[[], None]:
    """One pick and its record on idle endpoints with unequal weights."""
    d = impl.Dispatcher(n_endpoints, seed=12345)
    d.set_weights([1.0 + (i % 3) for i in range(n_endpoints)])
    pick, record = d.pick, d.record

    def pair() -> None:
        record(pick(), 0.01, True)

    return pair


@needs_compiled
def test_floor_compiled_noop(benchmark) -> None:
    benchmark.group = "dispatch pick+record"
    benchmark(_dispatch_c.noop)


@needs_compiled
@pytest.mark.parametrize("n_endpoints", [8, 1024])
def test_pair_cython(benchmark, n_endpoints: int) -> None:
    benchmark.group = "dispatch pick+record"
    benchmark(pair_fn(_dispatch_c, n_endpoints))


@pytest.mark.parametrize("n_endpoints", [8, 1024])
def test_pair_python_twin(benchmark, n_endpoints: int) -> None:
    benchmark.group = "dispatch pick+record"
    benchmark(pair_fn(_dispatch_py, n_endpoints))


@needs_compiled
def test_pick_excluding_cython(benchmark) -> None:
    """A retry's pick(exclude=i) then its record: the slower path, for reference."""
    benchmark.group = "dispatch pick(exclude)+record"
    d = _dispatch_c.Dispatcher(8, seed=12345)
    d.set_weights([1.0 + (i % 3) for i in range(8)])
    pick, record = d.pick, d.record

    def pair() -> None:
        record(pick(3), 0.01, True)

    benchmark(pair)


def lane_fn(dispatch: ModuleType, lanes: ModuleType) -> Callable[[], None]:
    """One request's whole bookkeeping on the lane: begin, pick, succeeded (8 endpoints, no callback taken)."""
    import time

    d = dispatch.Dispatcher(8, seed=12345)
    d.set_weights([1.0 + (i % 3) for i in range(8)])
    clock = time.monotonic
    lane = lanes.Lane(d, lanes.EndpointTally(8), lanes.SlidingCount(10.0, clock()), clock, 1e9,
                      print, print, print)
    begin, pick, succeeded = lane.begin, lane.pick, lane.succeeded

    def request() -> None:
        t0 = begin()
        succeeded(pick(), t0)

    return request


@needs_compiled
def test_lane_request_cython(benchmark) -> None:
    """begin + pick + succeeded: what the sync clients' first attempt costs besides the send."""
    benchmark.group = "lane begin+pick+succeeded"
    benchmark(lane_fn(_dispatch_c, _dispatch_c))


def test_lane_request_python_twin(benchmark) -> None:
    from tritonmix.dispatch_core import _lane_py

    benchmark.group = "lane begin+pick+succeeded"
    benchmark(lane_fn(_dispatch_py, _lane_py))
