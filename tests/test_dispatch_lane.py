"""The compiled lane (``Lane``, ``EndpointTally``, ``SlidingCount``) and its twin: the same counts, the same calls
back, the same picks for the same operations and seed."""
from __future__ import annotations

import math
import os
import threading
from types import ModuleType
from typing import Any, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonmix.dispatch_core import _dispatch_py, _lane_py

try:
    from tritonmix.dispatch_core import _dispatch_c
except ImportError:  # no compiled build in this checkout
    _dispatch_c = None

EXPECT_COMPILED = os.environ.get("TRITONMIX_EXPECT_COMPILED") == "1" and not os.environ.get("TRITONMIX_NO_EXTENSIONS")
BUILDS = {"python": (_dispatch_py, _lane_py), "cython": (_dispatch_c, _dispatch_c)}


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Calls:
    """The lane's callbacks, recorded."""

    def __init__(self) -> None:
        self.log: List[Tuple[Any, ...]] = []

    def due(self, now: float) -> None:
        self.log.append(("due", now))

    def slow(self, i: int, latency_s: float) -> None:
        self.log.append(("slow", i, latency_s))

    def failed(self, i: int, outcome: Any, now: float) -> None:
        self.log.append(("failed", i, outcome, now))


def build(name: str) -> Tuple[ModuleType, ModuleType]:
    dispatch, lane = BUILDS[name]
    if dispatch is None:
        if EXPECT_COMPILED:
            pytest.fail("TRITONMIX_EXPECT_COMPILED=1 but the compiled dispatch core does not import")
        pytest.skip("compiled dispatch core not built")
    return dispatch, lane


@pytest.fixture(params=list(BUILDS))
def impl(request: pytest.FixtureRequest) -> Tuple[ModuleType, ModuleType]:
    return build(request.param)


def make_lane(impl: Tuple[ModuleType, ModuleType], n: int = 3, slo_s: float = 0.5, seed: int = 7) -> Tuple[Any, ...]:
    dispatch, lanes = impl
    clock, calls = Clock(), Calls()
    d = dispatch.Dispatcher(n, seed=seed)
    d.set_weights([1.0] * n)
    tally = lanes.EndpointTally(n)
    requests = lanes.SlidingCount(10.0, clock())
    lane = lanes.Lane(d, tally, requests, clock, slo_s, calls.due, calls.slow, calls.failed)
    return lane, clock, calls, tally, requests


def test_a_success_is_counted_once_and_recorded(impl: Any) -> None:
    lane, clock, calls, tally, requests = make_lane(impl)
    t0 = lane.begin()
    i = lane.pick()
    clock.now += 0.1
    assert lane.succeeded(i, t0) == pytest.approx(0.1)
    stats = lane.dispatcher.stats()
    assert lane.arrivals == 1 and requests.total(clock()) == 1
    assert tally.successes()[i] == 1 and sum(tally.successes()) == 1
    assert stats.successes[i] == 1 and sum(stats.in_flight) == 0
    assert calls.log == []  # no streak, within the SLO: no call back


def test_a_slow_success_or_one_that_ends_a_streak_calls_back(impl: Any) -> None:
    lane, clock, calls, tally, _ = make_lane(impl)
    t0 = lane.begin()
    i = lane.pick()
    clock.now += 0.75
    lane.succeeded(i, t0)
    assert calls.log == [("slow", i, pytest.approx(0.75))]
    tally.set_streak(i, 3)
    lane.succeeded(lane.pick(exclude=[j for j in range(3) if j != i]), clock())
    assert calls.log[-1] == ("slow", i, 0.0) and tally.streak(i) == 3  # the router ends the streak, not the lane


def test_a_failure_is_recorded_and_reported_unless_it_was_a_cancellation(impl: Any) -> None:
    lane, clock, calls, _, _ = make_lane(impl)
    t0 = lane.begin()
    i = lane.pick()
    clock.now += 0.2
    assert lane.failed(i, t0, "refused") == clock.now
    j = lane.pick()
    lane.failed(j, clock.now + 1.0, None)  # a start in the future is recorded as 0 s, and nothing reported
    stats = lane.dispatcher.stats()
    assert calls.log == [("failed", i, "refused", clock.now)]
    assert stats.failures[i] + stats.failures[j] == 2 and sum(stats.in_flight) == 0


def test_begin_calls_back_once_the_readmission_time_has_passed(impl: Any) -> None:
    lane, clock, calls, tally, _ = make_lane(impl)
    assert tally.readmit_at == math.inf
    tally.readmit_at = 105.0
    lane.begin()
    clock.now = 105.0
    lane.begin()
    assert calls.log == [("due", 105.0)] and lane.arrivals == 2


def test_the_sliding_count_keeps_one_half_window_then_forgets(impl: Any) -> None:
    _, lanes = impl
    count = lanes.SlidingCount(10.0, 100.0)
    for _ in range(3):
        count.add(100.0)
    count.add(106.0)  # the next half: the first three are the previous half
    assert count.total(106.0) == 4
    assert count.total(111.0) == 1  # one more half on: only the 106 s event remains
    assert count.total(125.0) == 0  # a jump of more than one half clears both
    with pytest.raises(ValueError, match="window_s"):
        lanes.SlidingCount(0.0, 0.0)


def test_bad_arguments_are_refused(impl: Any) -> None:
    dispatch, lanes = impl
    with pytest.raises(ValueError, match="endpoints"):
        lanes.Lane(dispatch.Dispatcher(3), lanes.EndpointTally(2), lanes.SlidingCount(1.0, 0.0), Clock(), 1.0,
                   print, print, print)
    with pytest.raises(IndexError):
        lanes.EndpointTally(2).streak(2)


def test_counts_are_exact_under_threads(impl: Any) -> None:
    lane, clock, _, tally, requests = make_lane(impl, slo_s=math.inf)

    def worker() -> None:
        for _ in range(2000):
            t0 = lane.begin()
            lane.succeeded(lane.pick(), t0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lane.arrivals == 8000 and sum(tally.successes()) == 8000 and requests.total(clock()) == 8000


OPS = st.lists(st.tuples(st.sampled_from(["ok", "fail", "cancel", "tick", "streak"]), st.floats(0.0, 2.0)),
               max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**32))
def test_both_builds_agree(ops: List[Tuple[str, float]], seed: int) -> None:
    if _dispatch_c is None:
        pytest.skip("compiled dispatch core not built")
    runs = []
    for name in BUILDS:
        lane, clock, calls, tally, requests = make_lane(BUILDS[name], seed=seed)
        picks = []
        for op, x in ops:
            if op == "tick":
                clock.now += 4.0 * x
                continue
            if op == "streak":
                tally.set_streak(int(x) % 3, int(x * 2))
                continue
            t0 = lane.begin()
            i = lane.pick()
            picks.append(i)
            clock.now += x / 4.0
            if op == "ok":
                lane.succeeded(i, t0)
            else:
                lane.failed(i, t0, "x" if op == "fail" else None)
        runs.append((picks, calls.log, tally.successes(), lane.arrivals, requests.total(clock()),
                     repr(tuple(lane.dispatcher.stats()))))  # repr: NaN latencies compare equal
    assert runs[0] == runs[1]
