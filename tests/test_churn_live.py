"""Endpoints that join, drain and leave under load, with real Triton servers (``tritonmix.discovery`` semantics):
a client whose fleet starts empty is given two endpoints, then a third joins, then one drains (terminating) and
leaves, while eight threads send add_sub requests. The draining endpoint sits behind a FaultProxy that holds each
chunk 0.1 s, so that requests are still out on it when it turns terminating."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator

import numpy as np
import pytest

import tritonmix.http as httpclient
from tritonmix.discovery import EndpointState
from tritonmix.fleet import EndpointSpec, Fleet
from tritonmix.local import FaultProxy
from tritonmix.settings import ControllerSettings

from clients_support import Trio, add_sub_inputs, assert_nothing_in_flight, hammer, sample, trio_fixture

INTERVAL_S = 0.5
#: the controller's thread wakes at most EARLY_TICK_GAP x interval after a tick, then needs its tick; the rest is
#: a loaded 2-core machine's scheduling
SLACK_S = 0.25


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    yield from trio_fixture()


def spec(name: str, url: str) -> EndpointSpec:
    return EndpointSpec(name=name, accelerator="cpu", price_per_hour=1.0, url=url, max_concurrency=4)


def test_join_drain_and_leave_under_load(trio: Trio) -> None:
    trio.heal()
    urls = trio.urls("http")
    fleet = Fleet(endpoints=(), slo_ms=3000.0, mode="capacity",
                  controller=ControllerSettings(interval_s=INTERVAL_S, eject_base_s=0.3, eject_max_s=1.0))
    with FaultProxy(urls[1]) as proxy, httpclient.InferenceServerClient(fleet=fleet, seed=11) as client:
        proxy.set_delay(0.1)
        e0, e1, e2 = spec("e0", urls[0]), spec("e1", proxy.address), spec("e2", urls[2])
        client.apply_endpoints([e0, e1])
        seen: Dict[str, Any] = {}

        def call(k: int) -> None:
            a, b = sample(k % 7)
            result = client.infer("add_sub", add_sub_inputs(httpclient, a, b))
            assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)

        def during() -> None:
            d = client.router.dispatcher("add_sub")
            change = client.apply_endpoints([e0, e1, e2])  # a join
            seen["join"] = change.joined
            joined_at, slot = time.monotonic(), change.joined[0]
            while d.stats().picks[slot] == 0 and time.monotonic() - joined_at < 5.0:
                time.sleep(0.01)
            seen["first_pick_s"] = time.monotonic() - joined_at
            time.sleep(0.5)
            waited = time.monotonic()  # e1 takes a request every so often: drain it while one is out
            while d.in_flight(1) == 0 and time.monotonic() - waited < 2.0:
                time.sleep(0.002)
            seen["in_flight_e1"] = d.in_flight(1)
            client.apply_endpoints([EndpointState(e0), EndpointState(e1, terminating=True), EndpointState(e2)])
            before = d.stats()
            seen["drain"] = (before.picks[1], before.successes[1] + before.failures[1], before.in_flight[1])
            time.sleep(1.0)
            after = d.stats()
            seen["drained"] = (after.picks[1], after.successes[1] + after.failures[1], after.in_flight[1])
            change = client.apply_endpoints([e0, e2])  # e1 leaves: nothing of it is in flight any more
            seen["leave"] = (change.left, change.drained)
            seen["reports"] = {r.name for r in client.endpoint_reports()}

        errors = hammer(call, threads=8, duration_s=5.0, during=during, after_s=1.0)
        print(f"first pick of the newcomer {seen['first_pick_s']:.3f} s after the join; {seen['drain'][2]} requests "
              f"out on the draining endpoint, {seen['drained'][1] - seen['drain'][1]} recorded after it drained")
        assert errors == [], errors[:3]
        assert seen["join"] == (2,)
        assert seen["first_pick_s"] <= INTERVAL_S + SLACK_S, seen
        assert seen["in_flight_e1"] > 0, "requests should be out on the delayed endpoint when it turns terminating"
        picks, done, out = seen["drain"]
        assert out > 0
        assert seen["drained"] == (picks, picks, 0), seen  # no new pick; every one out when it drained was recorded
        assert seen["leave"] == ((1,), (1,)) and seen["reports"] == {"e0", "e2"}
        d = client.router.dispatcher("add_sub")
        assert d.stats().picks[2] > 0 and client.router.vacant() == (False, True, False)
        assert_nothing_in_flight(client)
