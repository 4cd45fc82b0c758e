"""Hedged requests (``controller.hedge``, ``tritonmix._hedging``) on the sync HTTP client, with fake endpoint clients
(no Triton needed): a request stuck on a slow endpoint is answered by a copy on another one; without hedging it waits;
a request error is not hedged; ``batch`` requests are never hedged; every pick is matched by one record."""
from __future__ import annotations

import time
from typing import Any, List, Optional

import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.http
from clients_support import UNREACHABLE, FakeEndpoint, assert_nothing_in_flight
from tritonmix.errors import ConfigError
from tritonmix.fleet import Fleet



def _client(endpoints: List[FakeEndpoint], hedge: Optional[dict]) -> Any:
    controller: dict = {"enabled": False}
    if hedge is not None:
        controller["hedge"] = hedge
    fleet = Fleet.from_urls(UNREACHABLE, protocol="http", slo_ms=600, controller=controller)
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=5)
    urls = [e.url for e in fleet.endpoints]
    client._clients._factory = lambda url: endpoints[urls.index(url)]
    client.router.set_ejector(lambda i, reason, now: None)  # keep both endpoints in rotation
    return client


def _latencies(client: Any, n: int, **kwargs: Any) -> List[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        client.infer("add_sub", [], **kwargs)
        out.append(time.monotonic() - t0)
    return out


def _settle(client: Any, endpoints: List[FakeEndpoint]) -> None:
    """Wait for abandoned (unhedgeable HTTP) attempts to end, then check every pick was recorded."""
    time.sleep(max(e.delay_s for e in endpoints) + 0.2)
    assert_nothing_in_flight(client)


def test_a_request_stuck_on_a_slow_endpoint_is_answered_by_its_hedge() -> None:
    endpoints = [FakeEndpoint(delay_s=1.0), FakeEndpoint(delay_s=0.01)]
    client = _client(endpoints, hedge={"min_delay_s": 0.02, "max_share": 1.0})
    try:
        latencies = _latencies(client, 12)
        assert endpoints[0].calls >= 1, "the slow endpoint was never picked: nothing to hedge"
        assert max(latencies) < 0.6, f"a request waited for the slow endpoint despite hedging: {latencies}"
        _settle(client, endpoints)
    finally:
        client.close()


def test_without_hedging_the_slow_endpoint_holds_its_requests() -> None:
    endpoints = [FakeEndpoint(delay_s=1.0), FakeEndpoint(delay_s=0.01)]
    client = _client(endpoints, hedge=None)
    try:
        latencies = _latencies(client, 12)
        assert endpoints[0].calls >= 1
        assert max(latencies) >= 0.95, f"no request waited for the slow endpoint: {latencies}"
    finally:
        client.close()


def test_batch_requests_are_never_hedged() -> None:
    endpoints = [FakeEndpoint(delay_s=0.8), FakeEndpoint(delay_s=0.8)]
    client = _client(endpoints, hedge={"min_delay_s": 0.02})
    try:
        _latencies(client, 3, request_class="batch")
        assert endpoints[0].calls + endpoints[1].calls == 3, "a batch request was sent twice"
    finally:
        client.close()


def test_a_request_error_passes_through_once_without_a_hedge() -> None:
    error = InferenceServerException("bad shape", status="400")
    endpoints = [FakeEndpoint(error, delay_s=0.05), FakeEndpoint(error, delay_s=0.05)]
    client = _client(endpoints, hedge={"min_delay_s": 0.5})
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("add_sub", [])
        assert "bad shape" in info.value.message()
        assert endpoints[0].calls + endpoints[1].calls == 1, "a request error was retried or hedged"
    finally:
        client.close()


def test_the_hedge_budget_caps_hedges_at_its_share() -> None:
    """max_share 0.05 over 10 requests allows max(2, 0.5) = 2 hedges: later requests on the slow endpoint wait."""
    endpoints = [FakeEndpoint(delay_s=1.0), FakeEndpoint(delay_s=0.01)]
    client = _client(endpoints, hedge={"min_delay_s": 0.02, "max_share": 0.05})
    try:
        latencies = _latencies(client, 10)
        slow_calls = endpoints[0].calls
        waited = sum(1 for x in latencies if x >= 0.9)
        assert slow_calls >= 3, f"the slow endpoint was picked {slow_calls} times: too few to show the cap"
        assert slow_calls - waited == 2, (slow_calls, sorted(latencies))  # exactly two were answered by a hedge
        _settle(client, endpoints)
    finally:
        client.close()


@pytest.mark.parametrize("hedge, field", [({"delay_factor": 0}, "delay_factor"), ({"max_hedges": -1}, "max_hedges"),
                                          ({"max_share": 1.5}, "max_share"), ({"nope": 1}, "nope")])
def test_bad_hedge_settings_name_the_field(hedge: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Fleet.from_urls(UNREACHABLE, protocol="http", controller={"hedge": hedge})


# ---- trigger "projected_miss": the hedge decision on its own (a real dispatcher, a fake engine) -------------------

class _Budget:
    def record_request(self) -> None:
        pass

    def try_acquire(self) -> bool:
        return True


class _Tried:
    def tried(self) -> frozenset:
        return frozenset()


def _projected_plan(latencies: List[float], slo_s: float = 0.6, sent: int = 0, ahead: int = 0) -> Any:
    """A _Plan over a 3-endpoint dispatcher whose endpoints usually answer in ``latencies``, clock at 0; the request
    is sent to endpoint ``sent`` with ``ahead`` requests of ours already in flight there."""
    from types import SimpleNamespace

    from tritonmix._hedging import HedgeDelay, _Plan
    from tritonmix.dispatch_core import Dispatcher
    from tritonmix.settings import HedgeSettings

    now = [0.0]
    settings = HedgeSettings(enabled=True, trigger="projected_miss", min_delay_s=0.0)
    d = Dispatcher(len(latencies), seed=1)
    d.set_weights([1.0] * len(latencies))
    for i, x in enumerate(latencies):  # one answer each: the EWMA (and the usual latency) starts there
        d.record(d.pick(frozenset(j for j in range(len(latencies)) if j != i)), x, True)
    fleet = SimpleNamespace(slo_s=slo_s, endpoints=[SimpleNamespace(max_concurrency=None, max_rps=None)] * 3)
    delay = HedgeDelay(fleet, settings, lambda: now[0])
    engine = SimpleNamespace(hedge=settings, hedge_budget=_Budget(), router=SimpleNamespace(budget=_Budget()))
    att = SimpleNamespace(e=engine, d=d, deadline_at=None, policy=_Tried())
    others = frozenset(j for j in range(len(latencies)) if j != sent)
    for _ in range(ahead):
        d.pick(others)
    plan = _Plan(att, delay, max_hedges=1)
    plan.started(d.pick(others), 0.0)
    return plan, d, now


def test_projected_miss_hedges_a_request_queued_behind_a_slowed_endpoint() -> None:
    """4 of ours ahead on endpoint 0 (usual 0.15 s), one of them answered in the 0.3 s since: 3 left at that pace
    take 0.9 s more, past the 0.6 s SLO. The copy goes to the endpoint that can still answer in time (1), not to
    the one whose usual 0.35 s does not fit in the 0.3 s left (2)."""
    plan, d, now = _projected_plan([0.15, 0.1, 0.35], ahead=4)
    d.record(0, 0.3, True)
    now[0] = plan.hedge_at
    assert plan.hedge_at == pytest.approx(0.3)  # 2 x usual
    assert plan.will_miss(now[0], [0])
    assert plan.too_slow(now[0]) == {2}
    assert plan.due(now[0], (0,)) == 1


def test_projected_miss_leaves_a_request_whose_queue_moves_in_time() -> None:
    """The same queue answered at the usual pace (4 ahead, 3 answered in 0.3 s): the last one ahead and its own
    service end by ~0.55 s, within the SLO: no copy, looked at again 50 ms later. In service (the last one ahead
    answered) it ends at age + 0.15 s at the usual speed: left alone while that is within the SLO, copied after."""
    from tritonmix._hedging import REFRESH_S

    plan, d, now = _projected_plan([0.15, 0.1, 0.35], ahead=4)
    for _ in range(3):
        d.record(0, 0.15, True)
    now[0] = plan.hedge_at
    assert plan.due(now[0], (0,)) is None
    assert plan.hedge_at == pytest.approx(now[0] + REFRESH_S)
    d.record(0, 0.15, True)  # the last one ahead answered: ours is in service
    now[0] = 0.42
    assert plan.due(now[0], (0,)) is None
    assert plan.hedge_at == pytest.approx(0.47)
    now[0] = 0.47
    assert plan.due(now[0], (0,)) == 1, "no copy for a request that at the usual speed ends after the SLO"


def test_projected_miss_hedges_a_request_stuck_in_service() -> None:
    """Nothing ahead (so in service from the start), usual 0.15 s: at 0.3 s it is within 2 x usual, a copy would
    be early; past it, it is stuck (a slow-down or a hang) and gets its copy at once."""
    plan, d, now = _projected_plan([0.15, 0.1, 0.35], ahead=0)
    now[0] = 0.3
    assert not plan.will_miss(now[0], [0])
    now[0] = 0.31
    assert plan.will_miss(now[0], [0])


def test_projected_miss_sends_no_copy_where_none_could_answer_in_time() -> None:
    """Stuck at 0.5 s: 0.1 s left of the SLO, and both others usually take longer: no copy, no budget spent."""
    plan, d, now = _projected_plan([0.15, 0.2, 0.35], ahead=0)
    spent = []
    plan.att.e.hedge_budget.try_acquire = lambda: spent.append(1) or True
    now[0] = plan.hedge_at = 0.5
    assert plan.will_miss(now[0], [0])
    assert {1, 2} <= plan.too_slow(now[0])
    assert plan.due(now[0], (0,)) is None and not spent


@pytest.mark.parametrize("case", ["no answer", "unavailable"])
def test_projected_miss_hedges_when_the_endpoint_went_silent_or_away(case: str) -> None:
    plan, d, now = _projected_plan([0.15, 0.1, 0.35], ahead=2)
    if case == "unavailable":
        d.record(0, 0.15, True)
        d.record(0, 0.15, True)
        d.set_available(0, False)
    now[0] = plan.hedge_at
    assert plan.will_miss(now[0], [0])


def test_the_delay_trigger_hedges_every_late_request() -> None:
    """Nothing ahead and the queue moving: "projected_miss" holds the copy back, "delay" sends it."""
    plan, d, now = _projected_plan([0.15, 0.1, 0.35], ahead=0)
    now[0] = plan.hedge_at
    assert plan.due(now[0], (0,)) is None
    plan.first = None  # what trigger "delay" keeps: no projection
    plan.hedge_at = now[0]
    assert plan.due(now[0], (0,)) in (1, 2)


def test_a_bad_trigger_names_its_values() -> None:
    with pytest.raises(ConfigError, match="trigger.*projected_miss"):
        Fleet.from_urls(UNREACHABLE, protocol="http", controller={"hedge": {"trigger": "sometimes"}})
