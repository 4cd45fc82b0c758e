"""The rescue rule (``tritonmix.request.rescue``) without servers: the limit, the copies per request, the settings,
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


def test_a_copy_that_stalls_gets_another_while_retries_are_left() -> None:
    def after(*outcomes: Outcome) -> RetryPolicy:
        policy = RetryPolicy(max_retries=2)
        for k, outcome in enumerate(outcomes):
            policy = policy.after(Attempt(k, f"e{k}", outcome, "why"))
        return policy

    assert after(Outcome.STALLED).can_retry()
    assert after(Outcome.NOT_SENT, Outcome.STALLED).can_retry()
    assert after(Outcome.STALLED, Outcome.STALLED).can_retry()  # the copy stalled too: another (budget permitting)
    assert not after(Outcome.STALLED, Outcome.STALLED, Outcome.STALLED).can_retry()  # max_retries 2: three attempts
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


def _trio(seed: int, share: float = 0.2) -> Any:
    """Two silent endpoints and one that answers; with seed 0 the first pick and its copy land on the silent
    ones (the dispatcher's draws are seeded), so the request needs a second copy."""
    fleet = Fleet.from_urls("127.0.0.1:9,127.0.0.1:10,127.0.0.1:11", protocol="grpc", slo_ms=100.0,
                            controller={"enabled": False, "retry_budget_share": share})
    fakes = [Frozen(), Frozen(), Answers()]
    by_url = dict(zip((e.url for e in fleet.endpoints), fakes))
    client = tritonmix.grpc.InferenceServerClient(fleet=fleet, seed=seed, endpoint_client_factory=by_url.__getitem__)
    return client, fakes


def test_a_copy_that_stalls_too_gets_a_second_charged_to_the_retry_budget() -> None:
    client, fakes = _trio(seed=0)
    with client:
        budget = client._core.engine.router.budget
        assert client.infer("m", []) == "ok"
        reports = client.endpoint_reports()
        assert_nothing_in_flight(client)
    assert [len(f.timeouts) for f in fakes[:2]] == [1, 1], "seed 0 no longer picks both silent endpoints first"
    assert [r.rescued for r in reports] == [1, 1, 0]
    assert budget.granted == 1  # the first copy is free, the second is a retry


def test_a_second_copy_the_budget_refuses_ends_the_request_naming_every_endpoint() -> None:
    client, fakes = _trio(seed=0, share=0.0)
    with client:
        client._core.engine.router.budget.min_retries = 0
        with pytest.raises(InferenceServerException) as info:
            client.infer("m", [])
        assert_nothing_in_flight(client)
    text = str(info.value)
    assert [len(f.timeouts) for f in fakes[:2]] == [1, 1] and not fakes[2].timeouts
    assert "the rescue copy got no answer either, and the retry budget is spent" in text, text
    assert text.count("(stalled)") == 2 and "not tried: 127.0.0.1:11" in text, text
