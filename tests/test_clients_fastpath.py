"""The sync clients' fast path (the first attempt on the compiled lane, ``tritonmix.clients.sync``) keeps every behaviour of the
engine's loop: one record per pick, failover, pass-through errors, cancellation, no endpoint, exact counters under
threads, SLO misses and failure streaks. Fake endpoint clients stand in for the servers (no Triton needed)."""
from __future__ import annotations

import itertools
import threading
from typing import Any, Iterator, List, Optional

import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
import tritonmix.http
from clients_support import UNREACHABLE, FakeEndpoint, assert_nothing_in_flight
from tritonmix.fleet import Fleet

KEY = ("add_sub", "interactive")


def _client(protocol: str, endpoints: List[FakeEndpoint], *, slo_ms: Optional[float] = None,
            clock: Any = None) -> Any:
    fields: dict = {"controller": {"enabled": False}}
    if slo_ms is not None:
        fields["slo_ms"] = slo_ms
    fleet = Fleet.from_urls(UNREACHABLE, protocol=protocol, **fields)
    extra = {} if clock is None else {"clock": clock}
    urls = [e.url for e in fleet.endpoints]
    client = getattr(tritonmix, protocol).InferenceServerClient(
        fleet=fleet, seed=5, endpoint_client_factory=lambda url: endpoints[urls.index(url)], **extra)
    client.router.set_ejector(lambda i, reason, now: None)  # keep every endpoint in rotation
    return client


@pytest.fixture(params=["http", "grpc"])
def protocol(request: Any) -> str:
    return request.param


@pytest.fixture
def make(protocol: str) -> Iterator[Any]:
    made: List[Any] = []

    def factory(endpoints: List[FakeEndpoint], **kwargs: Any) -> Any:
        client = _client(protocol, endpoints, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        try:
            assert_nothing_in_flight(client)
        finally:
            client.close()


def _refused(protocol: str) -> BaseException:
    if protocol == "http":
        return ConnectionRefusedError(111, "Connection refused")
    return InferenceServerException(msg="failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


def test_the_fast_path_is_taken_and_counts_exactly(make: Any) -> None:
    ok = [FakeEndpoint(), FakeEndpoint()]
    client = make(ok)
    for _ in range(50):
        assert client.infer("add_sub", ["x"])[0] == "result"
    assert KEY in client.router.lanes
    assert client.router.arrivals()[KEY] == 50
    assert [c[0] for c in client.router.endpoint_counters()] == [e.calls for e in ok]
    stats = client.router.dispatchers()[KEY].stats()
    assert stats.picks == stats.successes == tuple(e.calls for e in ok)


def test_a_failed_first_attempt_fails_over_and_is_recorded_once(make: Any, protocol: str) -> None:
    endpoints = [FakeEndpoint(_refused(protocol)), FakeEndpoint()]
    client = make(endpoints)
    for _ in range(100):
        assert client.infer("add_sub", ["x"])[0] == "result"
    assert endpoints[0].calls > 0 and endpoints[1].calls == 100  # every request that met endpoint 0 moved on
    assert client.router.arrivals()[KEY] == 100  # a retry is not an arrival
    counters = client.router.endpoint_counters()
    assert counters[0] == (0, 0, endpoints[0].calls) and counters[1][0] == 100
    stats = client.router.dispatchers()[KEY].stats()
    assert stats.picks == (endpoints[0].calls, 100) and stats.failures == (endpoints[0].calls, 0)
    assert client.router.budget.snapshot()[1] == 0  # never reached a server: no retry budget spent


def test_endpoint_reports_say_what_each_endpoint_was_sent_and_how_it_went(make: Any, protocol: str) -> None:
    endpoints = [FakeEndpoint(_refused(protocol)), FakeEndpoint()]
    client = make(endpoints)
    for _ in range(40):
        client.infer("add_sub", ["x"])
    refused, served = client.endpoint_reports()
    assert (refused.attempts, refused.succeeded, refused.failed) == (endpoints[0].calls, 0, endpoints[0].calls)
    assert (served.attempts, served.succeeded, served.failed, served.in_flight) == (40, 40, 0, 0)
    assert served.ewma_latency_s >= 0.0 and refused.ewma_latency_s != refused.ewma_latency_s  # NaN: no success
    assert served.url == client.router.fleet.endpoints[1].url and served.available
    assert client.controller is None and client.controller_view() is None  # the fleet turns the controller off


def test_the_servers_own_error_passes_through_without_retry(make: Any) -> None:
    error = InferenceServerException(msg="unexpected shape for input 'INPUT0'", status="400")
    endpoints = [FakeEndpoint(error), FakeEndpoint(error)]
    client = make(endpoints)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", ["x"])
    assert info.value is error
    assert sum(e.calls for e in endpoints) == 1
    assert sum(f for _, _, f in client.router.endpoint_counters()) == 1


def test_a_cancellation_is_recorded_and_propagates(make: Any) -> None:
    endpoints = [FakeEndpoint(KeyboardInterrupt), FakeEndpoint(KeyboardInterrupt)]
    client = make(endpoints)
    with pytest.raises(KeyboardInterrupt):
        client.infer("add_sub", ["x"])
    stats = client.router.dispatchers()[KEY].stats()
    assert sum(stats.picks) == sum(stats.failures) == 1  # recorded; the fixture checks nothing is in flight


def test_no_endpoint_available_fails_fast_with_one_error(make: Any) -> None:
    endpoints = [FakeEndpoint(), FakeEndpoint()]
    client = make(endpoints)
    client.infer("add_sub", ["x"])  # the lane exists from here on
    for i in range(2):
        client.router.set_endpoint_available(i, False)
    with pytest.raises(InferenceServerException, match="no endpoint available"):
        client.infer("add_sub", ["x"])
    assert client.router.arrivals()[KEY] == 2
    client.router.set_endpoint_available(1, True)
    assert client.infer("add_sub", ["x"])[0] == "result"


def test_counters_are_exact_across_threads(make: Any) -> None:
    endpoints = [FakeEndpoint(), FakeEndpoint()]
    client = make(endpoints)
    client.infer("add_sub", ["x"])
    threads = [threading.Thread(target=lambda: [client.infer("add_sub", ["x"]) for _ in range(2000)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = 1 + 8 * 2000
    assert client.router.arrivals()[KEY] == total
    assert sum(c[0] for c in client.router.endpoint_counters()) == total
    assert sum(client.router.dispatchers()[KEY].stats().successes) == total


def test_slo_misses_and_failure_streaks_are_kept(make: Any, protocol: str) -> None:
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731 - every read is one second later: every request misses 500 ms
    endpoints = [FakeEndpoint(), FakeEndpoint()]
    client = make(endpoints, slo_ms=500.0, clock=clock)
    for _ in range(10):
        client.infer("add_sub", ["x"])
    assert sum(c[1] for c in client.router.endpoint_counters()) == 10
    client.infer("add_sub", ["x"], request_class="batch")  # batch requests have no SLO
    assert sum(c[1] for c in client.router.endpoint_counters()) == 10
    router = client.router
    for i in (0, 1):
        router.tally.set_streak(i, 2)  # a failure streak: the next success on each endpoint ends it
    for _ in range(20):
        client.infer("add_sub", ["x"])
    assert [router.tally.streak(i) for i in (0, 1)] == [0, 0]


def test_an_unknown_request_class_is_refused(make: Any) -> None:
    client = make([FakeEndpoint(), FakeEndpoint()])
    with pytest.raises(InferenceServerException, match="request_class"):
        client.infer("add_sub", ["x"], request_class="urgent")
