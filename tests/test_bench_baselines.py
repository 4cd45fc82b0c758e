"""The practitioner's baselines of the scenario (``tritonmix.bench.baselines``), as pickers, without servers."""
from __future__ import annotations

from typing import List

import pytest

from tritonmix import Fleet
from tritonmix.bench.baselines import (CheapestFirstSpill, PeakEwmaP2C, Restricted, RoundRobin, WeightedLeastRequest,
                                       service_times, slo_capable)

# cheap: 0.5 s per request, 1 slot, $0.76/h; dear: 0.25 s, 2 slots, $1.34/h; cpu: 5 s (past the 1 s SLO), $0.36/h
FLEET = Fleet.from_dict({"slo_ms": 1000, "endpoints": [
    {"name": "dear", "url": "h:1", "accelerator": "gpu", "price_per_hour": 1.34, "max_concurrency": 2, "max_rps": 8.0},
    {"name": "cheap", "url": "h:2", "accelerator": "neuron", "price_per_hour": 0.76, "max_concurrency": 1,
     "max_rps": 2.0},
    {"name": "cpu", "url": "h:3", "accelerator": "cpu", "price_per_hour": 0.36, "max_concurrency": 1, "max_rps": 0.2},
]})
DEAR, CHEAP, CPU = 0, 1, 2


def test_the_fleet_facts_give_service_times_and_the_slo_capable_endpoints() -> None:
    assert service_times(FLEET) == pytest.approx([0.25, 0.5, 5.0])
    assert slo_capable(FLEET) == [DEAR, CHEAP]


def test_cheapest_first_fills_the_cheapest_to_its_slots_then_spills_and_never_uses_a_pool_past_the_slo() -> None:
    p = CheapestFirstSpill(FLEET)  # cost per request: cheap 0.76 x 0.5 / 1 = 0.38, dear 1.34 x 0.25 / 2 = 0.17
    picks: List[int] = [p.pick(set()) for _ in range(3)]
    assert picks == [DEAR, DEAR, CHEAP]  # dear is cheaper per request (two fast slots): to its cap, then cheap
    assert p.pick(set()) == DEAR  # all full: the fewest in flight per slot (dear 2/2 = 1.0, cheap 1/1 = 1.0: first)
    p.done(CHEAP)
    assert p.pick(set()) == CHEAP  # room again on cheap, dear is over its cap
    assert CPU not in picks
    with pytest.raises(LookupError):
        p.pick({DEAR, CHEAP})


def test_weighted_least_request_takes_the_largest_weight_per_request_in_flight() -> None:
    p = WeightedLeastRequest(FLEET, seed=1)  # weights from max_rps: 8, 2, 0.2
    picks = [p.pick(set()) for _ in range(5)]
    assert picks[:3] == [DEAR] * 3  # 8/1, 8/2, 8/3 > 2/1
    assert CHEAP in picks[3:]  # 8/4 = 2/1: a tie broken at random, then 2/1 > 8/5
    assert p.pick({DEAR, CHEAP}) == CPU


def test_peak_ewma_jumps_to_a_slow_answer_and_decays_back() -> None:
    now = [0.0]
    p = PeakEwmaP2C(2, tau_s=1.0, seed=3, clock=lambda: now[0])

    def picks(k: int) -> List[int]:
        out = []
        for _ in range(k):
            out.append(p.pick(set()))
            p.done(out[-1])
        return out

    p.observe(0, 0.1)
    p.observe(1, 0.1)
    p.observe(1, 2.0)  # one slow answer: its peak is 2.0 at once
    assert picks(20) == [0] * 20  # with two endpoints the pair is both: 0.1 x 1 against 2.0 x 1
    now[0] = 0.1
    p.observe(1, 0.1)  # a fast answer soon after hardly moves the peak (w = e^-0.1)
    assert picks(20) == [0] * 20
    now[0] = 10.0
    p.observe(1, 0.1)  # ten time constants later its peak has decayed to the fast answers (~0.1)...
    p.observe(0, 0.12)  # ... so once 0 answers a little slower, 1 is the cheaper of the pair
    assert picks(20) == [1] * 20


def test_restricted_translates_indexes_both_ways() -> None:
    p = Restricted([DEAR, CHEAP], RoundRobin(2))
    assert [p.pick(set()) for _ in range(4)] == [DEAR, CHEAP, DEAR, CHEAP]
    assert p.pick({DEAR}) == CHEAP
    p.done(CHEAP)


def test_senders_say_which_endpoints_each_request_went_to(monkeypatch) -> None:
    """The baseline sender returns (and a failure carries) the endpoint of every attempt; tritonmix's client's
    per-endpoint clients are wrapped to note theirs in the request's context."""
    import contextvars
    import threading

    import tritonclient.http as tc_http

    from tritonmix.bench.senders import _TRIED, BaselineSender, _Noting

    class Fake:
        def __init__(self, url: str, **kwargs: object) -> None:
            self.url = url

        def infer(self, *args: object, **kwargs: object) -> str:
            if self.url == "h:1":
                raise ConnectionRefusedError("refused")
            if self.url == "h:3":
                raise ValueError("bad request")
            return "ok"

        def close(self) -> None:
            pass

    monkeypatch.setattr(tc_http, "InferenceServerClient", Fake)
    sender = BaselineSender(FLEET, RoundRobin(3), "m", 1.0)
    assert sender() == ("dear", "cheap")  # refused on dear, retried on cheap
    with pytest.raises(ValueError) as failed:
        sender()  # round-robin's next is cpu: not a connection failure, no retry
    assert failed.value.tritonmix_endpoints == ("cpu",)
    tried: list = []
    token = _TRIED.set(tried)
    try:
        noting = _Noting(Fake("h:2"), "cheap")
        assert noting.infer() == "ok" and noting.url == "h:2" and tried == ["cheap"]
        # a hedged request's attempts run on the client's threads in a copy of the caller's context: noted too
        worker = threading.Thread(target=contextvars.copy_context().run, args=(noting.infer,))
        worker.start()
        worker.join()
        assert tried == ["cheap", "cheap"]
    finally:
        _TRIED.reset(token)
    assert noting.infer() == "ok" and tried == ["cheap", "cheap"]  # no request being sent: nothing noted
