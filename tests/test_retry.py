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
