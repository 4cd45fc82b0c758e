"""The rescue rule (``tritonmix.request.rescue``) without servers: the limit, one copy per request, the settings,
and the gRPC drop-in's first attempt bounded by the limit (fake endpoint clients)."""
from __future__ import annotations

import math
import time
from typing import Any, List

import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
from clients_support import assert_nothing_in_flight
from tritonmix.errors import ConfigError
from tritonmix.fleet import Fleet
from tritonmix.request.rescue import COLD_SLOS, RescueLimits
from tritonmix.request.retry import Attempt, Outcome, RetryPolicy
from tritonmix.settings import ControllerSettings


class _Lane:
    class dispatcher:  # noqa: N801 - stands in for the lane's attribute
        @staticmethod
        def stats() -> Any:
            return type("S", (), {"ewma_latency_s": [0.02, 0.5, math.nan]})()


def test_the_limit_is_a_whole_slo_past_the_usual_latency_or_a_multiple_of_it() -> None:
    limits = RescueLimits(_Lane(), slo_s=1.0, factor=4.0)
    assert limits.limit_s(0, 0.0) == pytest.approx(1.02)  # usual + SLO
    assert limits.limit_s(1, 0.0) == pytest.approx(2.0)  # 4 x usual
    assert limits.limit_s(2, 0.0) == COLD_SLOS * 1.0  # no success yet
    assert limits.limit_s(7, 0.0) == COLD_SLOS * 1.0  # an endpoint that joined since the last refresh


def test_one_copy_per_request() -> None:
    def after(*outcomes: Outcome) -> RetryPolicy:
        policy = RetryPolicy(max_retries=2)
        for k, outcome in enumerate(outcomes):
            policy = policy.after(Attempt(k, f"e{k}", outcome, "why"))
        return policy

    assert after(Outcome.STALLED).can_retry()
    assert after(Outcome.NOT_SENT, Outcome.STALLED).can_retry()
    assert not after(Outcome.STALLED, Outcome.STALLED).can_retry()  # the copy stalled too
    assert not RetryPolicy(max_retries=2, retry_maybe_executed=False).after(
        Attempt(0, "e0", Outcome.STALLED, "why")).can_retry()


def test_settings_turn_it_off_and_refuse_bad_values() -> None:
    assert ControllerSettings().rescue and ControllerSettings().rescue_factor == 4.0
    assert ControllerSettings.from_dict({"rescue": False}).rescue is False
    with pytest.raises(ConfigError, match="controller.rescue"):
        ControllerSettings.from_dict({"rescue": "no"})
    with pytest.raises(ConfigError, match="controller.rescue_factor"):
        ControllerSettings.from_dict({"rescue_factor": 0})


class Frozen:
    """tritonclient's sync gRPC infer: waits out the client_timeout it is given (None: forever, here 5 s), then
    raises DEADLINE_EXCEEDED, as a call to a frozen server does."""

    def __init__(self) -> None:
        self.timeouts: List[Any] = []

    def infer(self, model_name: str, inputs: Any, *args: Any) -> Any:
        client_timeout = args[8]
        self.timeouts.append(client_timeout)
        time.sleep(5.0 if client_timeout is None else client_timeout)
        raise InferenceServerException(msg="Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")

    def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def close(self) -> None:
        pass


class Answers(Frozen):
    def infer(self, model_name: str, inputs: Any, *args: Any) -> Any:
        return "ok"


def _client(rescue: bool) -> Any:
    fleet = Fleet.from_urls("127.0.0.1:9,127.0.0.1:10", protocol="grpc", slo_ms=100.0,
                            controller={"enabled": False, "rescue": rescue})
    fakes = {fleet.endpoints[0].url: Frozen(), fleet.endpoints[1].url: Answers()}
    client = tritonmix.grpc.InferenceServerClient(fleet=fleet, seed=1, endpoint_client_factory=fakes.__getitem__)
    return client, fakes[fleet.endpoints[0].url]


def test_a_grpc_attempt_on_a_silent_endpoint_is_cancelled_at_its_limit_and_copied_once() -> None:
    client, frozen = _client(rescue=True)
    with client:
        started = time.monotonic()
        for _ in range(6):
            assert client.infer("m", []) == "ok"
        elapsed_s = time.monotonic() - started
        reports = client.endpoint_reports()
        assert_nothing_in_flight(client)
    assert frozen.timeouts and all(t == pytest.approx(COLD_SLOS * 0.1) for t in frozen.timeouts)
    assert reports[0].rescued == len(frozen.timeouts) and reports[1].rescued == 0
    assert elapsed_s < len(frozen.timeouts) * COLD_SLOS * 0.1 + 1.0


def test_rescue_off_leaves_the_client_timeout_as_given() -> None:
    client, frozen = _client(rescue=False)
    with client:
        for _ in range(4):
            try:
                client.infer("m", [], client_timeout=0.05)
            except InferenceServerException:
                pass
        reports = client.endpoint_reports()
    assert frozen.timeouts and set(frozen.timeouts) == {0.05}
    assert reports[0].rescued == 0
