"""tritonmix.dispatch_core: every core test runs against both builds through the one ``impl`` fixture."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from types import ModuleType
from typing import Any, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tritonmix.dispatch_core as dispatch_core
from tritonmix.dispatch_core import _dispatch_py
from tritonmix.dispatch_core._common import DispatchError, DispatchStats, NoEndpointAvailable, UnmatchedRecord

try:
    from tritonmix.dispatch_core import _dispatch_c
except ImportError:  # no compiled build in this checkout
    _dispatch_c = None

EXPECT_COMPILED = os.environ.get("TRITONMIX_EXPECT_COMPILED") == "1" and not os.environ.get("TRITONMIX_NO_EXTENSIONS")
NO_COMPILED_REASON = "compiled dispatch core not built (run: python setup.py build_ext --inplace)"


@pytest.fixture(params=["python", "cython"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The module of one build: ``_dispatch_py`` or ``_dispatch_c``."""
    if request.param == "python":
        return _dispatch_py
    if _dispatch_c is None:
        if EXPECT_COMPILED:
            pytest.fail("TRITONMIX_EXPECT_COMPILED=1 but the compiled dispatch core does not import")
        pytest.skip(NO_COMPILED_REASON)
    return _dispatch_c


def make(impl: ModuleType, weights: List[float], seed: int = 1234, **kw: Any) -> Any:
    d = impl.Dispatcher(len(weights), seed=seed, **kw)
    d.set_weights(weights)
    return d


def counts_of(d: Any, n_picks: int, n: int) -> List[int]:
    """Pick and record at once (idle endpoints), counting picks per endpoint."""
    counts = [0] * n
    for _ in range(n_picks):
        i = d.pick()
        counts[i] += 1
        d.record(i, 0.01, True)
    return counts


# ---- selection of the build ---------------------------------------------------------------------------------


def test_compiled_build_loaded_when_expected() -> None:
    """CI (make test) sets TRITONMIX_EXPECT_COMPILED=1: a silent fallback to the twin fails here."""
    if not EXPECT_COMPILED:
        pytest.skip("TRITONMIX_EXPECT_COMPILED=1 not set (or TRITONMIX_NO_EXTENSIONS is)")
    assert dispatch_core.IMPLEMENTATION == "cython"
    assert dispatch_core.Dispatcher.__module__.endswith("_dispatch_c")


def test_no_extensions_env_forces_the_twin() -> None:
    env = dict(os.environ, TRITONMIX_NO_EXTENSIONS="1")
    code = "import tritonmix.dispatch_core as d; print(d.IMPLEMENTATION, d.Dispatcher.__module__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["python", "tritonmix.dispatch_core._dispatch_py"]


def test_public_names() -> None:
    assert sorted(dispatch_core.__all__) == sorted(
        ["IMPLEMENTATION", "Dispatcher", "DispatchError", "DispatchStats", "NoEndpointAvailable", "UnmatchedRecord",
         "Lane", "EndpointTally", "SlidingCount"]
    )
    for name in dispatch_core.__all__:
        assert hasattr(dispatch_core, name)
    assert dispatch_core.IMPLEMENTATION in ("cython", "python")
    assert issubclass(NoEndpointAvailable, LookupError) and issubclass(NoEndpointAvailable, DispatchError)
    assert issubclass(UnmatchedRecord, RuntimeError) and issubclass(UnmatchedRecord, DispatchError)


# ---- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5])
def test_bad_weight_names_the_index(impl: ModuleType, bad: float) -> None:
    d = impl.Dispatcher(4, seed=1)
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        d.set_weights([1.0, 1.0, bad, 1.0])
    assert d.weights() == (0.0, 0.0, 0.0, 0.0)  # nothing applied


@pytest.mark.parametrize("length", [3, 5])
def test_wrong_length(impl: ModuleType, length: int) -> None:
    d = impl.Dispatcher(4, seed=1)
    with pytest.raises(ValueError, match=f"length {length}, expected 4"):
        d.set_weights([1.0] * length)


def test_bad_arguments(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.Dispatcher(-1)
    for alpha in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="ewma_alpha"):
            impl.Dispatcher(2, ewma_alpha=alpha)
    d = make(impl, [1.0, 1.0])
    with pytest.raises(IndexError, match="index 2"):
        d.set_available(2, False)
    with pytest.raises(IndexError, match="index -1"):
        d.in_flight(-1)
    i = d.pick()
    for latency_s in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"endpoint {i}"):
            d.record(i, latency_s, True)
    with pytest.raises(IndexError, match="index 7"):
        d.record(7, 0.1, True)
    d.record(i, 0.1, True)
    assert d.stats().in_flight == (0, 0)


# ---- nothing eligible ---------------------------------------------------------------------------------------


def test_no_endpoint_when_all_weights_zero(impl: ModuleType) -> None:
    d = make(impl, [0.0, 0.0, 0.0])
    with pytest.raises(NoEndpointAvailable):
        d.pick()
    with pytest.raises(NoEndpointAvailable):
        impl.Dispatcher(0, seed=1).pick()


def test_no_endpoint_when_all_unavailable(impl: ModuleType) -> None:
    d = make(impl, [1.0, 2.0, 3.0])
    for i in range(3):
        d.set_available(i, False)
    with pytest.raises(NoEndpointAvailable):
        d.pick()
    d.set_available(1, True)
    assert {d.pick() for _ in range(50)} == {1}


def test_no_endpoint_when_all_excluded(impl: ModuleType) -> None:
    d = make(impl, [1.0, 0.0, 3.0])
    with pytest.raises(NoEndpointAvailable):
        d.pick(exclude=[0, 2])
    with pytest.raises(NoEndpointAvailable):
        make(impl, [0.0, 5.0]).pick(exclude=1)
    assert sum(d.stats().in_flight) == 0


def test_exclude_is_honoured(impl: ModuleType) -> None:
    d = make(impl, [100.0, 1.0, 1.0, 0.0])
    picks = [d.pick(exclude=(0,)) for _ in range(300)]  # the heavy one is excluded: rejection, then the scan
    assert set(picks) == {1, 2}
    assert {d.pick(exclude=[0, 1, 99, -5]) for _ in range(50)} == {2}  # out-of-range indexes are ignored
    assert d.pick(exclude=[]) in (0, 1, 2)


# ---- record -------------------------------------------------------------------------------------------------


def test_unmatched_record_raises_and_never_goes_negative(impl: ModuleType) -> None:
    d = make(impl, [1.0, 1.0])
    with pytest.raises(UnmatchedRecord):
        d.record(0, 0.1, True)
    i = d.pick()
    d.record(i, 0.1, True)
    with pytest.raises(UnmatchedRecord):
        d.record(i, 0.1, False)
    s = d.stats()
    assert s.in_flight == (0, 0) and sum(s.successes) == 1 and sum(s.failures) == 0


def test_ewma_formula(impl: ModuleType) -> None:
    """error_rate <- a*(0|1) + (1-a)*error_rate; ewma_latency_s <- a*latency_s + (1-a)*ewma, successes only."""
    a = 0.25
    d = make(impl, [1.0], ewma_alpha=a)
    s = d.stats()
    assert math.isnan(s.ewma_latency_s[0]) and s.error_rate[0] == 0.0
    lat, err = math.nan, 0.0
    for latency_s, ok in [(0.5, False), (0.2, True), (0.4, True), (9.0, False), (0.1, True)]:
        d.pick()
        d.record(0, latency_s, ok)
        err = a * (0.0 if ok else 1.0) + (1 - a) * err
        if ok:
            lat = latency_s if math.isnan(lat) else a * latency_s + (1 - a) * lat
        s = d.stats()
        assert s.error_rate[0] == pytest.approx(err, abs=1e-15)
        assert s.ewma_latency_s[0] == pytest.approx(lat, nan_ok=True)
    assert s.successes == (3,) and s.failures == (2,) and s.picks == (5,) and s.in_flight == (0,)


def test_stats_fields(impl: ModuleType) -> None:
    d = make(impl, [1.0, 0.0, 2.0])
    held = d.pick()
    s = d.stats()
    assert isinstance(s, DispatchStats)
    assert s._fields == ("in_flight", "picks", "successes", "failures", "ewma_latency_s", "error_rate")
    assert all(isinstance(col, tuple) and len(col) == 3 for col in s)
    assert s.in_flight[held] == 1 and d.in_flight(held) == 1 and s.picks[held] == 1
    assert all(type(v) is int for v in s.in_flight + s.picks + s.successes + s.failures)
    assert all(type(v) is float for v in s.ewma_latency_s + s.error_rate)
    assert d.weights() == (1.0, 0.0, 2.0) and d.n_endpoints == 3
    d.record(held, 0.1, True)


# ---- distribution -------------------------------------------------------------------------------------------


def test_picks_converge_to_weight_shares(impl: ModuleType) -> None:
    from scipy.stats import chisquare

    weights = [1.0, 2.0, 3.0, 0.0, 4.0, 5.0]
    d = make(impl, weights, seed=20240601)
    d.set_available(4, False)
    n_picks = 60_000
    counts = counts_of(d, n_picks, len(weights))
    assert counts[3] == 0 and counts[4] == 0  # weight 0 and unavailable: none
    eligible = [0, 1, 2, 5]
    total_w = sum(weights[i] for i in eligible)
    expected = [n_picks * weights[i] / total_w for i in eligible]
    result = chisquare([counts[i] for i in eligible], expected)
    assert result.pvalue > 0.001, (counts, result)


def test_loaded_endpoint_gets_fewer_picks(impl: ModuleType) -> None:
    d = make(impl, [1.0, 1.0, 1.0, 1.0], seed=7)
    held: List[int] = []
    while len(held) < 20:  # hold 20 requests in flight on endpoint 0
        i = d.pick()
        if i == 0:
            held.append(i)
        else:
            d.record(i, 0.01, True)
    counts = counts_of(d, 8_000, 4)
    others = sum(counts[1:]) / 3
    assert counts[0] < 0.5 * others, counts
    for i in held:
        d.record(i, 0.01, True)
    assert d.stats().in_flight == (0, 0, 0, 0)


def test_seeding(impl: ModuleType) -> None:
    a, b = make(impl, [1.0] * 16, seed=99), make(impl, [1.0] * 16, seed=99)
    assert counts_of(a, 200, 16) == counts_of(b, 200, 16)
    unseeded = [impl.Dispatcher(16, seed=None) for _ in range(2)]
    picks = []
    for d in unseeded:
        d.set_weights([1.0] * 16)
        picks.append([d.pick() for _ in range(32)])
    assert picks[0] != picks[1]  # os.urandom seeds: not in lock step (chance of equality 16**-32)


# ---- fleet changes ------------------------------------------------------------------------------------------


def test_resize_keeps_state(impl: ModuleType) -> None:
    d = make(impl, [0.0, 0.0, 3.0])
    held = d.pick()
    assert held == 2
    d.set_weights([1.0, 2.0, 3.0])
    i = d.pick()
    d.record(i, 0.3, False)
    d.set_available(1, False)
    before = d.stats()
    d.resize(5)
    s = d.stats()
    assert d.n_endpoints == 5
    assert d.weights() == (1.0, 2.0, 3.0, 0.0, 0.0)
    assert not d.is_available(1) and d.is_available(3) and d.is_available(4)
    for col_before, col_after in zip(before, s):
        assert repr(col_after[:3]) == repr(col_before)
    assert s.in_flight[3:] == (0, 0) and s.picks[3:] == (0, 0) and all(math.isnan(v) for v in s.ewma_latency_s[3:])
    d.set_weights([0.0, 0.0, 0.0, 0.0, 1.0])
    assert d.pick() == 4
    d.record(4, 0.01, True)
    with pytest.raises(ValueError, match="endpoint 2 has 1 requests in flight"):
        d.resize(2)
    assert d.n_endpoints == 5
    d.record(held, 0.01, True)
    d.resize(2)
    assert d.n_endpoints == 2 and d.weights() == (0.0, 0.0)
    assert d.stats().picks == before.picks[:2]
    d.resize(0)
    with pytest.raises(NoEndpointAvailable):
        d.pick()


# ---- threads ------------------------------------------------------------------------------------------------


def test_threads_lose_no_in_flight_counts(impl: ModuleType) -> None:
    """32 threads x 10,000 pick/record pairs: counts add up, nothing is left in flight or goes negative."""
    n_threads, n_pairs = 32, 10_000
    d = make(impl, [1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5, 3.5])
    errors: List[BaseException] = []
    start = threading.Barrier(n_threads + 1)

    def work() -> None:
        start.wait()
        try:
            for k in range(n_pairs):
                i = d.pick()
                if k % 16 == 0:
                    time.sleep(0)  # yield with a pick in flight: other threads pick and record meanwhile
                d.record(i, 0.001, k % 10 != 0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    peak_in_flight = 0

    def watch() -> None:
        nonlocal peak_in_flight
        start.wait()
        while any(t.is_alive() for t in workers):
            in_flight = d.stats().in_flight
            assert min(in_flight) >= 0
            peak_in_flight = max(peak_in_flight, sum(in_flight))
            time.sleep(0.001)

    workers = [threading.Thread(target=work) for _ in range(n_threads)]
    switch_interval_s = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that picks and records of many threads interleave
    try:
        for t in workers:
            t.start()
        watch()
        for t in workers:
            t.join()
    finally:
        sys.setswitchinterval(switch_interval_s)
    assert errors == []
    assert peak_in_flight > 1  # the threads did interleave
    s = d.stats()
    assert s.in_flight == (0,) * 8
    assert sum(s.picks) == n_threads * n_pairs
    assert sum(s.successes) + sum(s.failures) == n_threads * n_pairs
    assert sum(s.failures) == n_threads * n_pairs // 10


# ---- in-flight limits ----------------------------------------------------------------------------------------

def test_a_full_endpoint_overflows_to_one_under_its_limit(impl: ModuleType) -> None:
    d = impl.Dispatcher(3, seed=7)
    d.set_weights([100.0, 1.0, 1.0])
    d.set_limits([2, 50, 50])
    picks = [d.pick() for _ in range(40)]  # nothing recorded: endpoint 0 stays full after its first 2
    assert picks.count(0) == 2
    assert d.in_flight(0) == 2 and d.in_flight(1) + d.in_flight(2) == 38
    d.record(0, 0.1, True)
    assert d.pick() == 0  # room again: the weights rule
    assert d.limits() == (2, 50, 50)


def test_an_endpoint_without_a_limit_takes_no_overflow(impl: ModuleType) -> None:
    """A trial endpoint (no limit, tiny weight) must not become the target of all the overflow."""
    d = impl.Dispatcher(2, seed=5)
    d.set_weights([1.0, 0.02])
    d.set_limits([3, 0])
    picks = [d.pick() for _ in range(400)]  # nothing recorded: endpoint 0 is full after 3
    assert picks.count(1) < 40, picks.count(1)  # only its weighted draws (~2 x 2%), not the 397 overflowing


def test_every_endpoint_full_keeps_the_weighted_choice(impl: ModuleType) -> None:
    d = impl.Dispatcher(2, seed=3)
    d.set_weights([1.0, 1.0])
    d.set_limits([1, 1])
    first = {d.pick(), d.pick()}
    assert first == {0, 1}
    more = [d.pick() for _ in range(20)]  # all full: never refused, still spread by the pick rule
    assert set(more) == {0, 1}
    assert d.in_flight(0) + d.in_flight(1) == 22


def test_limits_respect_exclude_availability_and_zero_weight(impl: ModuleType) -> None:
    d = impl.Dispatcher(4, seed=11)
    d.set_weights([5.0, 1.0, 1.0, 0.0])
    d.set_available(2, False)
    d.set_limits([1, 100, 100, 100])
    assert d.pick() == 0
    for _ in range(20):  # 0 full, 2 unavailable, 3 weight 0: only 1 may take them
        assert d.pick() == 1
    with pytest.raises(NoEndpointAvailable):
        d.pick([0, 1])  # 0 is excluded, not merely full: nothing left
    assert d.pick(1) == 0  # 1 excluded, 0 full: every allowed one is full, the choice stands


def test_bad_limits_name_the_index(impl: ModuleType) -> None:
    d = impl.Dispatcher(3)
    with pytest.raises(ValueError, match=r"limits\[1\]"):
        d.set_limits([0, -1, 0])
    with pytest.raises(ValueError, match="length"):
        d.set_limits([0, 0])
    d.resize(4)
    assert d.limits() == (0, 0, 0, 0)


def test_other_clients_requests_count_against_the_limit_and_in_the_load_comparison(impl: ModuleType) -> None:
    """A plane's followers share an endpoint's limit: what the others hold there leaves less room for this one."""
    d = impl.Dispatcher(2, seed=9)
    d.set_weights([100.0, 1.0])
    d.set_limits([2, 50])
    d.set_external([1, 0])  # another client holds one of endpoint 0's two slots
    picks = [d.pick() for _ in range(10)]
    assert picks.count(0) == 1 and d.in_flight(0) == 1
    d.set_external([2, 0])  # the others fill it: nothing more goes there while they do
    d.record(0, 0.1, True)
    assert [d.pick() for _ in range(5)] == [1] * 5
    d.set_external([0, 0])
    assert d.pick() == 0 and d.external() == (0, 0)
    e = impl.Dispatcher(2, seed=1)
    e.set_weights([1.0, 1.0])
    e.set_external([5, 0])  # equal weights, no limits: the lighter endpoint by total load wins the comparison
    assert [e.pick() for _ in range(4)].count(1) >= 3
    with pytest.raises(ValueError, match=r"external\[1\]"):
        d.set_external([0, -2])
    d.resize(3)
    assert d.external() == (0, 0, 0)


# ---- the two builds agree -----------------------------------------------------------------------------------

_MAX_N = 12
_weights = st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0, 3.5, 1e-9, 1e6]), min_size=_MAX_N, max_size=_MAX_N)
_op = st.one_of(
    st.tuples(st.just("weights"), _weights),
    st.tuples(st.just("avail"), st.integers(0, _MAX_N), st.booleans()),
    st.tuples(st.just("pick"), st.none() | st.integers(0, _MAX_N) | st.lists(st.integers(-1, _MAX_N), max_size=4)),
    st.tuples(st.just("record"), st.integers(0, 1000), st.floats(0.0, 5.0), st.booleans()),
    st.tuples(st.just("resize"), st.integers(0, _MAX_N)),
    st.tuples(st.just("limits"), st.lists(st.integers(0, 3), min_size=_MAX_N, max_size=_MAX_N)),
    st.tuples(st.just("external"), st.lists(st.integers(0, 3), min_size=_MAX_N, max_size=_MAX_N)),
    st.tuples(st.just("remove"), st.integers(0, _MAX_N)),
    st.tuples(st.just("reuse"), st.integers(0, _MAX_N)),
)


def _apply(d: Any, op: Tuple[Any, ...], outstanding: List[int]) -> Tuple[str, Any]:
    kind = op[0]
    try:
        if kind == "weights":
            return ("ok", d.set_weights(op[1][: d.n_endpoints]))
        if kind == "avail":
            return ("ok", d.set_available(op[1], op[2]))
        if kind == "pick":
            return ("ok", d.pick(op[1]))
        if kind == "limits":
            return ("ok", d.set_limits(op[1][: d.n_endpoints]))
        if kind == "external":
            return ("ok", d.set_external(op[1][: d.n_endpoints]))
        if kind == "record":
            if not outstanding:
                return ("ok", "skip")
            return ("ok", d.record(outstanding[op[1] % len(outstanding)], op[2], op[3]))
        if kind == "remove":
            return ("ok", d.remove(op[1]))
        if kind == "reuse":
            return ("ok", d.reuse(op[1]))
        return ("ok", d.resize(op[1]))
    except Exception as exc:  # noqa: BLE001 - compared across builds
        return ("err", type(exc).__name__)


@pytest.mark.skipif(_dispatch_c is None, reason=NO_COMPILED_REASON)
@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, _MAX_N),
    seed=st.integers(-(2**63), 2**64 - 1),
    alpha=st.sampled_from([0.2, 0.5, 1.0]),
    ops=st.lists(_op, max_size=60),
)
def test_builds_agree(n: int, seed: int, alpha: float, ops: List[Tuple[Any, ...]]) -> None:
    """The twin is the reference: same seed, same operations, same picks, errors and stats in both builds."""
    ref = _dispatch_py.Dispatcher(n, seed=seed, ewma_alpha=alpha)
    comp = _dispatch_c.Dispatcher(n, seed=seed, ewma_alpha=alpha)
    outstanding: List[int] = []
    for step, op in enumerate(ops):
        got_ref = _apply(ref, op, outstanding)
        got_comp = _apply(comp, op, outstanding)
        assert got_comp == got_ref, (step, op)
        if op[0] == "pick" and got_ref[0] == "ok":
            outstanding.append(got_ref[1])
        elif op[0] == "record" and got_ref == ("ok", None):
            outstanding.remove(outstanding[op[1] % len(outstanding)])
        assert repr(comp.stats()) == repr(ref.stats()), (step, op)
    assert comp.weights() == ref.weights() and comp.n_endpoints == ref.n_endpoints
    assert comp.limits() == ref.limits() and comp.external() == ref.external()
    assert comp.removed() == ref.removed()


# ---- churn: endpoints that leave from anywhere (stable slots) ----------------------------------------------


def test_a_removed_endpoint_is_never_picked_and_its_requests_still_out_are_recorded(impl: ModuleType) -> None:
    d = impl.Dispatcher(4, seed=3)
    d.set_weights([1.0, 1.0, 1.0, 1.0])
    out = [d.pick() for _ in range(40)]
    middle = out[0]
    held = out.count(middle)
    d.remove(middle)
    assert d.is_removed(middle) and d.removed()[middle]
    assert middle not in [d.pick() for _ in range(400)]
    for i in out:
        d.record(i, 0.01, True)  # every request still out on the removed slot lands there
    s = d.stats()
    assert s.in_flight[middle] == 0 and s.successes[middle] == held
    assert d.weights()[middle] == 1.0  # kept, and ineffective
    d.set_available(middle, True)  # a health mask can not bring a removed endpoint back
    d.set_limits([1, 1, 1, 1])
    busy = [d.pick() for _ in range(12)]  # all full: overflow scans skip the removed slot too
    assert middle not in busy
    with pytest.raises(NoEndpointAvailable):
        d.pick(exclude=[j for j in range(4) if j != middle])


def test_take_counts_a_pick_the_caller_made_whatever_the_weight_or_mask(impl: ModuleType) -> None:
    """A request's last resort: the caller picks an endpoint the weights or the mask keep out; ``take`` counts it in
    flight as a pick, and one ``record`` matches it. A removed endpoint cannot be taken."""
    d = impl.Dispatcher(3, seed=1)
    d.set_weights([1.0, 0.0, 1.0])
    d.set_available(2, False)
    assert d.take(1) == 1 and d.take(2) == 2
    s = d.stats()
    assert s.in_flight == (0, 1, 1) and s.picks == (0, 1, 1)
    d.record(1, 0.2, True)
    d.record(2, 0.1, False)
    s = d.stats()
    assert s.in_flight == (0, 0, 0) and s.successes[1] == 1 and s.failures[2] == 1
    assert [d.pick() for _ in range(20)] == [0] * 20  # the weights and the mask are as they were
    d.remove(1)
    with pytest.raises(NoEndpointAvailable):
        d.take(1)
    with pytest.raises(IndexError):
        d.take(3)
    assert d.stats().in_flight == (20, 0, 0)


def test_a_slot_is_reused_only_when_removed_and_idle(impl: ModuleType) -> None:
    d = impl.Dispatcher(3, seed=5)
    d.set_weights([0.0, 1.0, 0.0])
    assert d.pick() == 1
    with pytest.raises(ValueError, match="not removed"):
        d.reuse(1)
    d.remove(1)
    with pytest.raises(NoEndpointAvailable):
        d.pick()
    with pytest.raises(ValueError, match="in flight"):
        d.reuse(1)
    d.record(1, 0.2, False)
    d.set_limits([0, 4, 0])
    d.set_external([0, 2, 0])
    d.reuse(1)
    s = d.stats()
    assert not d.is_removed(1) and d.weights()[1] == 0.0 and d.limits()[1] == 0 and d.external()[1] == 0
    assert (s.picks[1], s.successes[1], s.failures[1], s.error_rate[1]) == (0, 0, 0, 0.0)
    assert math.isnan(s.ewma_latency_s[1])
    d.set_weights([0.0, 2.0, 0.0])
    assert d.pick() == 1  # the newcomer takes traffic once it has a weight


def test_the_tally_grows_and_resets_a_slot(impl: ModuleType) -> None:
    lanes = _lane_module(impl)
    t = lanes.EndpointTally(2)
    t.set_streak(1, 3)
    t.resize(4)
    assert t.n_endpoints == 4 and t.successes() == (0, 0, 0, 0) and t.streak(1) == 3
    t.reset(1)
    assert t.streak(1) == 0
    with pytest.raises(ValueError, match="only grows"):
        t.resize(3)


def _lane_module(impl: ModuleType) -> ModuleType:
    if impl is _dispatch_py:
        from tritonmix.dispatch_core import _lane_py

        return _lane_py
    return impl
