"""Endpoints that join and leave from anywhere (``tritonmix.discovery``): the router and the controller follow the
set by slot, without a server (the live check is tests/test_churn_live.py)."""
from __future__ import annotations

import dataclasses
from typing import List

import pytest

from tritonmix.discovery import EndpointState
from tritonmix.dispatch_core import NoEndpointAvailable
from tritonmix.fleet import EndpointSpec, Fleet
from tritonmix.request import Router
from tritonmix.request.slots import EndpointChange


def spec(name: str, port: int, pool: str = "gpu", max_rps: float = 10.0) -> EndpointSpec:
    return EndpointSpec(name=name, accelerator="gpu", price_per_hour=1.0, url=f"127.0.0.1:{port}", pool=pool,
                        max_rps=max_rps, max_concurrency=1)


def state(name: str, port: int, ready: bool = True, terminating: bool = False) -> EndpointState:
    return EndpointState(spec(name, port), ready=ready, terminating=terminating)


def empty_fleet() -> Fleet:
    return Fleet(endpoints=())


def picks(router: Router, k: int, model: str = "m") -> List[int]:
    lane = router.lane(model)
    out = []
    for _ in range(k):
        i = lane.pick()
        out.append(i)
        lane.succeeded(i, lane.begin())
    return out


def test_an_empty_fleet_fills_from_discovery_and_takes_traffic() -> None:
    router = Router(empty_fleet(), seed=1)
    with pytest.raises(NoEndpointAvailable):
        router.lane("m").pick()
    change = router.apply_endpoints([state("a", 1), state("b", 2)])
    assert change.joined == (0, 1) and router.endpoint_names() == ("a", "b")
    assert set(picks(router, 50)) == {0, 1}


def test_one_that_leaves_from_the_middle_gets_nothing_and_its_requests_out_are_recorded() -> None:
    router = Router(empty_fleet(), seed=2)
    router.apply_endpoints([state(n, k) for k, n in enumerate("abcd", start=1)])
    lane = router.lane("m")
    out = [(lane.pick(), lane.begin()) for _ in range(40)]
    held = [i for i, _ in out if i == 1]
    assert held, "b should hold some requests"
    change = router.apply_endpoints([state(n, k) for k, n in zip((1, 3, 4), "acd")])
    assert change.left == (1,) and change.drained == () and router.vacant() == (False, True, False, False)
    assert 1 not in picks(router, 200)
    for i, t0 in out:
        lane.succeeded(i, t0)  # the records of b's requests land on b's slot
    d = router.dispatcher("m")
    assert d.stats().in_flight == (0, 0, 0, 0)
    reaped = router.reap()
    assert reaped.drained == (1,) and router.reap().drained == ()
    change = router.apply_endpoints([state(n, k) for k, n in zip((1, 3, 4, 5), "acde")])
    assert change.joined == (1,) and router.endpoint_names() == ("a", "e", "c", "d")  # the slot is reused
    assert d.stats().successes[1] == 0 and router.endpoint_counters()[1] == (0, 0, 0)
    assert 1 in picks(router, 200)


def test_a_slot_with_requests_out_is_not_reused_a_new_one_is_appended() -> None:
    router = Router(empty_fleet(), seed=3)
    router.apply_endpoints([state("a", 1), state("b", 2)])
    lane = router.lane("m")
    router.set_default_weights([0.0, 1.0])
    i = lane.pick()
    assert i == 1
    change = router.apply_endpoints([state("a", 1), state("c", 3)])
    assert change.left == (1,) and change.joined == (2,) and router.dispatcher("m").n_endpoints == 3
    lane.failed(i, lane.begin())  # the request on b's slot fails late: recorded there, nothing else moves
    assert router.reap().drained == (1,)


def test_a_terminating_endpoint_drains_and_a_not_ready_one_waits() -> None:
    router = Router(empty_fleet(), seed=4)
    router.apply_endpoints([state("a", 1), state("b", 2)])
    assert set(picks(router, 50)) == {0, 1}
    router.apply_endpoints([state("a", 1), state("b", 2, terminating=True)])
    assert set(picks(router, 100)) == {0} and router.serving() == (True, False)
    router.apply_endpoints([state("a", 1, ready=False), state("b", 2, terminating=True)])
    with pytest.raises(NoEndpointAvailable):
        router.lane("m").pick()
    router.apply_endpoints([state("a", 1), state("b", 2)])
    assert set(picks(router, 50)) == {0, 1}


def test_listeners_hear_each_change_and_bad_input_changes_nothing() -> None:
    router = Router(empty_fleet(), seed=5)
    heard: List[EndpointChange] = []
    router.add_endpoints_listener(heard.append)
    router.apply_endpoints([state("a", 1)])
    router.apply_endpoints([state("a", 1)])  # nothing changed: no call
    moved = EndpointState(spec("a", 9))
    router.apply_endpoints([moved])
    assert [(c.joined, c.replaced) for c in heard] == [((0,), ()), ((), (0,))]
    assert router.fleet.endpoints[0].url == "127.0.0.1:9"
    with pytest.raises(ValueError, match="twice"):
        router.apply_endpoints([state("a", 1), state("a", 2)])
    with pytest.raises(ValueError, match="no url"):
        router.apply_endpoints([EndpointSpec(name="x", accelerator="gpu", price_per_hour=1.0)])
    assert router.endpoint_names() == ("a",) and len(heard) == 2


def test_server_level_calls_skip_the_slots_whose_endpoint_left() -> None:
    from tritonmix.request.fanout import endpoint_order

    router = Router(empty_fleet(), seed=8)
    router.apply_endpoints([state("a", 1), state("b", 2), state("c", 3)])
    router.apply_endpoints([state("a", 1), state("c", 3)])
    assert endpoint_order(router, "every", (), {}) == [0, 2]


def test_explicit_weights_give_a_newcomer_nothing_until_a_plan_does() -> None:
    router = Router(empty_fleet(), seed=6)
    router.apply_endpoints([state("a", 1)])
    router.set_weights("m", "interactive", [1.0])
    router.apply_endpoints([state("a", 1), state("b", 2)])
    assert router.dispatcher("m").weights() == (1.0, 0.0)
    assert set(picks(router, 50)) == {0}
    router.set_weights("m", "interactive", [1.0, 1.0])
    assert set(picks(router, 50)) == {0, 1}


# ---- the controller follows the set -------------------------------------------------------------------------

from tritonmix.controller import Controller  # noqa: E402
from tritonmix.controller.signals import NullSource  # noqa: E402
from tritonmix.controller.simulation import FakeClock  # noqa: E402


def controlled(clock: FakeClock) -> tuple:
    fleet = Fleet(endpoints=(), slo_ms=500.0, mode="capacity")
    router = Router(fleet, seed=7, clock=clock)
    return Controller(fleet, router, source=NullSource(0), clock=clock, jitter=0.0), router


def serve(router: Router, clock: FakeClock, k: int, latency_s: float = 0.05) -> List[int]:
    lane = router.lane("m")
    out = []
    for _ in range(k):
        t0 = lane.begin()
        i = lane.pick()
        clock.advance(latency_s / 10)
        lane.succeeded(i, t0 - latency_s)
        out.append(i)
    return out


def test_the_controller_starts_empty_and_plans_over_the_set_as_it_changes() -> None:
    clock = FakeClock()
    ctl, router = controlled(clock)
    ctl.tick()  # nothing to plan over: no error
    router.apply_endpoints([state("a", 1), state("b", 2), state("c", 3)])
    assert ctl.tick_due_early  # a join brings the next tick forward
    plan = ctl.tick()
    assert plan.endpoints == ("a", "b", "c") and all(w > 0 for w in plan.interactive_weights)
    serve(router, clock, 300)
    clock.advance(0.5)
    ctl.tick()
    router.apply_endpoints([state("a", 1), state("c", 3)])
    clock.advance(0.5)
    plan = ctl.tick()
    assert plan.interactive_weights[1] == 0.0 and plan.interactive_weights[0] > 0 and ctl.n == 3
    assert 1 not in serve(router, clock, 200)
    router.apply_endpoints([state("a", 1), state("c", 3), state("d", 4)])  # takes b's drained slot
    clock.advance(0.5)
    plan = ctl.tick()
    assert plan.endpoints == ("a", "d", "c") and plan.interactive_weights[1] > 0.0
    assert 1 in serve(router, clock, 200)


def test_a_newcomer_is_seeded_from_a_measured_pool_mate() -> None:
    clock = FakeClock()
    ctl, router = controlled(clock)
    router.apply_endpoints([state("a", 1), state("b", 2)])
    for _ in range(6):
        serve(router, clock, 100, latency_s=0.2)
        clock.advance(0.5)
        ctl.tick()
    mate = ctl.observer.models["m"].capacity[0]
    assert mate.measured and mate.service_s != pytest.approx(0.1)  # hint: C=1, max_rps=10
    router.apply_endpoints([state("a", 1), state("b", 2), state("e", 5)])
    clock.advance(0.5)
    ctl.tick()
    fresh = ctl.observer.models["m"].capacity[2]
    mus = sorted(c.mu_rps for c in ctl.observer.models["m"].capacity[:2])
    assert fresh.measured and fresh.mu_rps in mus
    assert len(ctl.health.ready) == 3 and ctl.snapshot() is not None


def test_a_draining_endpoint_is_out_of_the_plan_and_not_a_panic() -> None:
    clock = FakeClock()
    ctl, router = controlled(clock)
    router.apply_endpoints([state("a", 1), state("b", 2)])
    ctl.tick()
    router.apply_endpoints([state("a", 1), state("b", 2, terminating=True)])
    plan = ctl.tick()
    assert plan.interactive_weights[1] == 0.0 and not ctl.health.panic and plan.available == (True, False)


# ---- the drop-in clients follow the set ---------------------------------------------------------------------

import asyncio  # noqa: E402
import importlib  # noqa: E402
from typing import Any, Dict  # noqa: E402

from clients_support import FakeEndpoint  # noqa: E402


class Fake(FakeEndpoint):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url, self.closed = url, 0

    def close(self) -> None:
        self.closed += 1

    def is_server_live(self, *args: Any, **kwargs: Any) -> bool:
        return True


class AioFake(Fake):
    async def infer(self, model_name: str, inputs: Any, *args: Any) -> Any:  # type: ignore[override]
        return FakeEndpoint.infer(self, model_name, inputs)

    async def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        return True

    async def close(self) -> None:  # type: ignore[override]
        self.closed += 1


def spec_of(name: str, port: int, protocol: str) -> EndpointSpec:
    return EndpointSpec(name=name, accelerator="cpu", price_per_hour=1.0, url=f"127.0.0.1:{port}", protocol=protocol)


@pytest.mark.parametrize("module", ["tritonmix.http", "tritonmix.grpc"])
def test_a_sync_client_starts_empty_then_follows_joins_and_leaves(module: str) -> None:
    protocol = module.rsplit(".", 1)[1]
    made: Dict[str, List[Fake]] = {}

    def factory(url: str) -> Fake:
        made.setdefault(url, []).append(Fake(url))
        return made[url][-1]

    fleet = Fleet(endpoints=(), controller=Fleet(endpoints=()).controller.__class__(enabled=False))
    with importlib.import_module(module).InferenceServerClient(fleet=fleet, seed=1, endpoint_client_factory=factory,
                                                              readiness_interval_s=3600) as client:
        client.apply_endpoints([spec_of("a", 1, protocol), spec_of("b", 2, protocol)])
        for _ in range(40):
            client.infer("m", [])
        assert {r.name for r in client.endpoint_reports() if r.succeeded} == {"a", "b"}
        client.apply_endpoints([spec_of("b", 2, protocol), spec_of("c", 3, protocol)])  # a leaves, c joins
        for _ in range(60):
            client.infer("m", [])
        reports = {r.name: r for r in client.endpoint_reports()}
        assert set(reports) == {"b", "c"} and reports["c"].succeeded > 0
        a_calls = sum(f.calls for f in made["127.0.0.1:1"])
        for _ in range(20):
            client.infer("m", [])
        assert sum(f.calls for f in made["127.0.0.1:1"]) == a_calls  # nothing more reaches a
        assert all(f.closed for f in made["127.0.0.1:1"])  # nothing was in flight: a's clients are closed
        assert client.is_server_live()
        with pytest.raises(Exception, match="not .* endpoints"):
            client.apply_endpoints([spec_of("x", 4, "grpc" if protocol == "http" else "http")])


@pytest.mark.parametrize("module", ["tritonmix.http.aio", "tritonmix.grpc.aio"])
def test_an_aio_client_starts_empty_then_follows_joins_and_leaves(module: str) -> None:
    protocol = module.split(".")[1]
    made: Dict[str, AioFake] = {}

    def factory(url: str) -> AioFake:
        made[url] = AioFake(url)
        return made[url]

    async def scenario() -> None:
        fleet = Fleet(endpoints=(), controller=Fleet(endpoints=()).controller.__class__(enabled=False))
        client = importlib.import_module(module).InferenceServerClient(fleet=fleet, seed=2,
                                                                       endpoint_client_factory=factory)
        try:
            client.apply_endpoints([spec_of("a", 1, protocol), spec_of("b", 2, protocol)])
            for _ in range(40):
                await client.infer("m", [])
            client.apply_endpoints([spec_of("b", 2, protocol)])
            await asyncio.sleep(0.01)  # the drained client's close runs on the loop
            for _ in range(20):
                await client.infer("m", [])
            assert made["127.0.0.1:1"].closed == 1 and made["127.0.0.1:2"].calls >= 20
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_client_that_follows_a_plane_refuses_a_changing_set() -> None:
    from tritonmix.errors import ConfigError

    import tritonmix.http as httpclient

    fleet = Fleet.from_urls("127.0.0.1:9", controller={"enabled": False})
    with httpclient.InferenceServerClient(fleet=fleet, control_plane="127.0.0.1:1",
                                          endpoint_client_factory=Fake, readiness_interval_s=3600) as client:
        with pytest.raises(ConfigError, match="control plane"):
            client.apply_endpoints([spec_of("a", 1, "http")])


def test_a_plan_made_before_a_join_is_applied_with_the_newcomer_at_zero() -> None:
    clock = FakeClock()
    ctl, router = controlled(clock)
    router.apply_endpoints([state("a", 1), state("b", 2)])
    serve(router, clock, 10)
    plan = ctl.tick()
    router.apply_endpoints([state("a", 1), state("b", 2), state("c", 3)])  # joins between decide and apply
    assert ctl.applier.offer(dataclasses.replace(plan, generation=plan.generation + 1))
    assert router.dispatcher("m").weights()[2] == 0.0 and router.dispatcher("m").weights()[0] > 0.0
    router.apply_endpoints([state("a", 1), state("c", 3), state("d", 4)])  # b's slot reused by d: refused
    assert not ctl.applier.offer(dataclasses.replace(plan, generation=plan.generation + 2))
    assert ctl.applier.refused == {"endpoints": 1}


def test_hedge_delays_cover_endpoints_that_joined() -> None:
    from tritonmix.request.hedging import HedgeDelay
    from tritonmix.settings import HedgeSettings

    clock = FakeClock()
    router = Router(empty_fleet(), seed=9, clock=clock)
    router.apply_endpoints([state("a", 1)])
    delay = HedgeDelay(router.fleet, HedgeSettings(), clock)
    d = router.dispatcher("m")
    assert delay(d, 0) > 0
    router.apply_endpoints([state("a", 1), state("b", 2)])
    clock.advance(1.0)
    assert delay(d, 1) > 0


@pytest.mark.parametrize("no_extensions", [False, True])
def test_threads_pick_and_record_while_another_churns(no_extensions: bool, monkeypatch: Any) -> None:
    """The hot path takes no router lock: four threads pick and record while a fifth reconciles 300 changes. No
    error, every pick recorded on its slot, and no pick lands on a slot that was vacant both before and after it
    with no newcomer in it between."""
    import threading

    from tritonmix.dispatch_core import _dispatch_py, _lane_py

    if no_extensions:  # the pure-Python twin under the same churn
        monkeypatch.setattr("tritonmix.request.router.Dispatcher", _dispatch_py.Dispatcher)
        monkeypatch.setattr("tritonmix.request.router.Lane", _lane_py.Lane)
        monkeypatch.setattr("tritonmix.request.router.EndpointTally", _lane_py.EndpointTally)
    router = Router(empty_fleet(), seed=10)
    names = [f"e{k}" for k in range(12)]
    router.apply_endpoints([state(n, k + 1) for k, n in enumerate(names)])
    lane = router.lane("m")
    stop, errors, bad = threading.Event(), [], []

    def work() -> None:
        while not stop.is_set():
            try:
                # a slot vacant at both reads and held by the same name at both (a slot can be reused by a
                # newcomer, picked, and left again between the two reads: its name then differs)
                names_before, before = router.endpoint_names(), router.vacant()
                i = lane.pick()
                after, names_after = router.vacant(), router.endpoint_names()
                if (i < len(before) and before[i] and after[i] and i < len(names_after)
                        and names_before[i] == names_after[i]):
                    bad.append(i)
                lane.succeeded(i, lane.begin())
            except NoEndpointAvailable:
                continue
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    rng = __import__("random").Random(4)
    live = list(names)
    for k in range(300):
        if len(live) > 3 and (rng.random() < 0.5 or len(live) > 20):
            live.remove(rng.choice(live))
        else:
            live.append(f"n{k}")
        router.apply_endpoints([state(n, 100 + int(n[1:])) for n in live])
        router.reap()
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == [] and bad == []
    stats = router.dispatcher("m").stats()
    assert sum(stats.in_flight) == 0 and sum(stats.picks) > 0
    assert router.dispatcher("m").n_endpoints < 40  # slots are reused
