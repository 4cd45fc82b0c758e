"""Hedged requests (``controller.hedge``, ``tritonmix.request.hedging``) on the sync HTTP client, with fake endpoint clients
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
    urls = [e.url for e in fleet.endpoints]
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=5,
                                                  endpoint_client_factory=lambda url: endpoints[urls.index(url)])
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


def test_a_hedged_requests_attempts_see_the_callers_context_variables() -> None:
    """The sync HTTP client runs a hedged request's attempts on its own threads, in a copy of the caller's context:
    a context variable the caller set (a trace span, a request id) is what both attempts see."""
    import contextvars

    request_id: "contextvars.ContextVar[str]" = contextvars.ContextVar("request_id", default="none")
    seen: List[str] = []

    class Seeing(FakeEndpoint):
        def infer(self, model_name: str, inputs: Any, *args: Any) -> Any:
            seen.append(request_id.get())
            return super().infer(model_name, inputs, *args)

    endpoints = [Seeing(delay_s=0.3), Seeing(delay_s=0.3)]
    client = _client(endpoints, hedge={"min_delay_s": 0.02, "max_share": 1.0})
    try:
        request_id.set("r-42")
        client.infer("add_sub", [])
        _settle(client, endpoints)
    finally:
        client.close()
    assert len(seen) == 2, f"expected the first attempt and its hedge, saw {seen}"
    assert seen == ["r-42", "r-42"]


def test_a_request_queued_behind_ours_is_hedged_only_when_late_for_its_queue() -> None:
    """The hedge delay counts the rounds of our own requests ahead on the endpoint (its max_concurrency at a time):
    a queue draining as it should spends no hedge; a request expected past the last moment a copy could still meet
    the SLO gets its copy at the SLO (a tail bound), not at once."""
    from types import SimpleNamespace

    from tritonmix.request.hedging import HEDGE_ROOM, HedgeDelay
    from tritonmix.settings import HedgeSettings

    fleet = Fleet.from_dict({"slo_ms": 600, "controller": {"enabled": False}, "endpoints": [
        {"name": "cheap", "url": "127.0.0.1:9", "accelerator": "neuron", "price_per_hour": 1.0, "max_concurrency": 3, "max_rps": 18.0},
        {"name": "fast", "url": "127.0.0.1:10", "accelerator": "gpu", "price_per_hour": 2.0, "max_concurrency": 3, "max_rps": 24.0},
        {"name": "unknown", "url": "127.0.0.1:11", "accelerator": "gpu", "price_per_hour": 2.0}]})
    ewma = (0.17, 0.125, 0.2)
    d = SimpleNamespace(stats=lambda: SimpleNamespace(ewma_latency_s=ewma), is_available=lambda j: True)
    delay = HedgeDelay(fleet, HedgeSettings(enabled=True), lambda: 0.0)
    cap = 0.6 - HEDGE_ROOM * 0.125  # a copy on 'fast' still meets the SLO until then
    assert abs(delay(d, 0) - 2 * 0.17) < 1e-9  # no queue: twice the usual latency (under the cap)
    assert abs(delay(d, 0, ahead=2) - 2 * 0.17) < 1e-9  # two ahead on three slots: still no wait
    assert abs(delay(d, 0, ahead=3) - cap) < 1e-9  # one round ahead: expected 0.34 s, late past the cap only
    assert abs(delay(d, 0, ahead=6) - 0.6) < 1e-9  # expected 0.51 s, past the cap: the copy leaves at the SLO
    # an endpoint whose concurrency is not known: the queue is not counted (the rule without it)
    assert abs(delay(d, 2, ahead=50) - min(2 * 0.2, 0.6 - HEDGE_ROOM * 0.125)) < 1e-9


def test_a_hedge_goes_where_a_copy_can_still_answer_within_the_slo() -> None:
    """SLO 300 ms; weights 0.8 / 0.1 / 0.1 (no controller) on 'stuck' (answers in 0.35 s, its hint says 50 ms),
    'slow' (0.2 s, as its hint says) and 'fast' (10 ms). A request on 'stuck' is hedged at 2 x 50 ms; 0.2 s of the
    SLO are left then, and a copy on 'slow' (1.25 x 0.2 s) could not make it: the copy goes to 'fast'. Before, the
    pick ignored the time left and sent half the copies to 'slow', answering past the SLO."""
    from tritonmix.request.hedging import HEDGE_FIT

    eps = [("stuck", 0.35, 0.05), ("slow", 0.2, 0.2), ("fast", 0.01, 0.01)]
    fleet = Fleet.from_dict({"slo_ms": 300, "controller": {"enabled": False, "hedge": {"max_share": 1.0}},
                             "endpoints": [{"name": name, "url": f"127.0.0.1:{9 + k}", "accelerator": "gpu",
                                            "price_per_hour": 1.0, "max_concurrency": 1, "max_rps": 1.0 / hint}
                                           for k, (name, _, hint) in enumerate(eps)]})
    endpoints = [FakeEndpoint(delay_s=delay) for _, delay, _ in eps]
    urls = [e.url for e in fleet.endpoints]
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=5,
                                                  endpoint_client_factory=lambda url: endpoints[urls.index(url)])
    client.router.set_ejector(lambda i, reason, now: None)  # keep 'stuck' in rotation
    assert HEDGE_FIT * 0.2 > 0.3 - 2 * 0.05 > HEDGE_FIT * 0.01
    try:
        client.router.lane("add_sub", "interactive").dispatcher.set_weights([0.8, 0.1, 0.1])
        latencies = []
        for _ in range(16):
            latencies += _latencies(client, 1)
            time.sleep(0.3)  # the abandoned attempt on 'stuck' ends (sync HTTP cannot cancel it): all idle again
        assert endpoints[0].calls >= 8, "too few requests went to 'stuck' to hedge"
        # the copies go to 'fast' (a copy on 'slow' answers at 0.1 + 0.2 s, a pick blind to the time left sends half
        # of them there); one or two late answers are a loaded machine's scheduling
        assert sum(latency >= 0.3 for latency in latencies) <= 2, latencies
        assert endpoints[2].calls >= 2 * endpoints[1].calls, (endpoints[1].calls, endpoints[2].calls)
        _settle(client, endpoints)
    finally:
        client.close()
