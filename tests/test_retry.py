"""The retry policy value and the retry budget (fake clock); which answers of a server fail over."""
from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.http
from clients_support import UNREACHABLE, FakeEndpoint, assert_nothing_in_flight
from tritonmix.fleet import Fleet
from tritonmix.grpc._transport import classify_grpc
from tritonmix.http._transport import classify_http
from tritonmix.http.aio import classify_aio_http
from tritonmix.request.retry import Outcome, RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_minimum_then_the_share() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, min_retries=3, window_s=10.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    for _ in range(40):  # 50 requests: 0.2 x 50 = 10 retries
        budget.record_request()
    granted = sum(budget.try_acquire() for _ in range(20))
    assert granted == 7  # 10 in all, 3 already taken
    clock.now += 25.0  # the window has passed: the minimum again
    assert budget.try_acquire()


def test_only_attempts_that_reached_a_server_count_as_extra_load() -> None:
    assert not Outcome.NOT_SENT.reached_server
    assert Outcome.MAYBE_RAN.reached_server and Outcome.UNAVAILABLE.reached_server


def test_the_budget_counts_what_it_granted_and_refused() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, min_retries=2, window_s=10.0, clock=clock)
    answers = [budget.try_acquire() for _ in range(5)]
    assert answers == [True, True, False, False, False]
    assert (budget.granted, budget.refused) == (2, 3) and budget.snapshot() == (0, 2)


# ---- which answers of a server fail over ----------------------------------------------------------------------

#: (message, HTTP status, gRPC status, expected outcome)
ANSWERS = [
    ("Stub process 'stable_diffusion_0_1' is not healthy.", "500", "StatusCode.INTERNAL", Outcome.MAYBE_RAN),
    ("Failed to process the requests.", "500", "StatusCode.INTERNAL", Outcome.MAYBE_RAN),
    ("Failed to retrieve the response error.", "500", "StatusCode.INTERNAL", Outcome.MAYBE_RAN),
    # a thawed server's answer in the scenario (the gateway's one error in benches/results/scenario-quick.md)
    ("failed to reserve 5764607523034234880 bytes in output tensor buffer", "500", "StatusCode.INTERNAL",
     Outcome.MAYBE_RAN),
    # a model that raised: its own error about the request, never retried
    ("Failed to process the request(s) for model instance 'add_sub_0_0', message: ValueError: bad",
     "500", "StatusCode.INTERNAL", Outcome.REQUEST),
    ("Failed to process the requests.", "400", "StatusCode.INVALID_ARGUMENT", Outcome.REQUEST),
    ("unexpected shape for input 'INPUT0'", "400", "StatusCode.INVALID_ARGUMENT", Outcome.REQUEST),
    ("Server is not ready", "503", "StatusCode.UNAVAILABLE", Outcome.UNAVAILABLE),
]


@pytest.mark.parametrize("message,http_status,grpc_status,expected", ANSWERS)
def test_a_python_backend_failure_fails_over_and_a_models_own_error_does_not(message: str, http_status: str,
                                                                              grpc_status: str,
                                                                              expected: Outcome) -> None:
    assert classify_http(InferenceServerException(message, status=http_status)) is expected
    assert classify_aio_http(InferenceServerException(message, status=http_status)) is expected
    assert classify_grpc(InferenceServerException(message, status=grpc_status)) is expected


def test_a_request_failed_by_a_dead_python_stub_is_served_elsewhere() -> None:
    dead = FakeEndpoint(InferenceServerException("Stub process 'add_sub_0_1' is not healthy.", status="500"))
    endpoints = [dead, FakeEndpoint()]
    fleet = Fleet.from_urls(UNREACHABLE, protocol="http", slo_ms=600, controller={"enabled": False})
    urls = [e.url for e in fleet.endpoints]
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=5,
                                                  endpoint_client_factory=lambda url: endpoints[urls.index(url)])
    try:
        for _ in range(20):
            assert client.infer("add_sub", [])[0] == "result"
        assert dead.calls >= 1, "the dead stub's endpoint was never picked: nothing was failed over"
        assert_nothing_in_flight(client)
    finally:
        client.close()


def test_a_retry_with_nowhere_left_tries_an_ejected_endpoint_that_is_up_again() -> None:
    """After a restart: A was ejected for a refused connection and is up again, its backoff not over; B, the one
    endpoint left routable, now refuses. The retry has no routable endpoint left: it goes to A (the last resort)
    instead of failing the request while A could answer."""
    a, b = FakeEndpoint(ConnectionRefusedError(111, "Connection refused")), FakeEndpoint()
    endpoints = [a, b]
    fleet = Fleet.from_urls(UNREACHABLE, protocol="http", slo_ms=600, controller={"enabled": False})
    urls = [e.url for e in fleet.endpoints]
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=3,
                                                  endpoint_client_factory=lambda url: endpoints[urls.index(url)])
    try:
        for _ in range(20):  # A refuses: ejected at its first refusal, every request answered by B
            assert client.infer("add_sub", [])[0] == "result"
            if client.router.ejected()[0]:
                break
        assert client.router.ejected() == [True, False] and a.calls == 1
        a.error, b.error = None, ConnectionRefusedError(111, "Connection refused")  # A back up, B restarting
        before = (a.calls, b.calls)
        assert client.infer("add_sub", [])[0] == "result"
        assert (a.calls, b.calls) == (before[0] + 1, before[1] + 1)  # B refused, then A answered
        assert client.router.ejected()[0], "A is still ejected: the last resort does not readmit it"
        assert_nothing_in_flight(client)
    finally:
        client.close()


def test_a_request_fails_naming_every_endpoint_when_the_last_resort_fails_too() -> None:
    a = FakeEndpoint(ConnectionRefusedError(111, "Connection refused"))
    b = FakeEndpoint(ConnectionRefusedError(111, "Connection refused"))
    endpoints = [a, b]
    fleet = Fleet.from_urls(UNREACHABLE, protocol="http", slo_ms=600, controller={"enabled": False, "max_retries": 3})
    urls = [e.url for e in fleet.endpoints]
    client = tritonmix.http.InferenceServerClient(fleet=fleet, seed=3,
                                                  endpoint_client_factory=lambda url: endpoints[urls.index(url)])
    try:
        with pytest.raises(InferenceServerException, match="failed on every endpoint tried") as info:
            client.infer("add_sub", [])
        assert "127.0.0.1:9" in str(info.value) and "127.0.0.1:10" in str(info.value)
        assert (a.calls, b.calls) == (1, 1)  # each tried once: a last resort never goes back to one tried
        assert_nothing_in_flight(client)
    finally:
        client.close()


def test_the_last_resort_is_an_endpoint_up_but_kept_out_with_the_shortest_failure_streak() -> None:
    from tritonmix.request.router import Router

    fleet = Fleet.from_urls("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4", protocol="http", slo_ms=600,
                            controller={"enabled": False})
    router = Router(fleet, seed=1)
    router.lane("m", "interactive")
    assert router.last_resort("m", frozenset({0, 1, 2, 3})) is None
    router.set_model_ready("m", [True, False, True, True])  # 1 not ready for m: never a last resort for it
    router.tally.set_streak(2, 3)
    assert router.last_resort("m", frozenset({0})) == 3  # 2 has failed three times in a row, 3 never
    router.tally.set_streak(3, 5)
    assert router.last_resort("m", frozenset({0})) == 2
    assert router.last_resort("m", frozenset({0, 2, 3})) is None
    router.tally.set_streak(2, 0)
    router.tally.set_streak(3, 0)
    assert [router.last_resort("m", frozenset({0})) for _ in range(4)] == [3, 2, 3, 2]  # ties: after the last
