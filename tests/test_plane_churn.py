"""The control plane over a changing endpoint set, unit level (no servers): the plane's slots, the set on the wire, a
plan moved to a follower's slots by name, reports keyed by name, and the load channel by plane slot. A slot handed
to a new endpoint must not inherit the load, errors or ejection of the one before it."""
from __future__ import annotations

import json
from typing import Any, List, Optional

import numpy as np
import pytest

from tritonmix import Fleet
from tritonmix.control_plane import Board, ReportError, build_report, parse_report
from tritonmix.control_plane.endpoints import EndpointSet, parse_set, remap_plan
from tritonmix.control_plane.load import TELL, LoadHub, encode
from tritonmix.control_plane.report import fingerprint_of, fleet_fingerprint
from tritonmix.controller.model import ModelPlan
from tritonmix.controller.plan import ModelRoute, Plan
from tritonmix.discovery import EndpointState
from tritonmix.fleet import EndpointSpec
from tritonmix.request import Router

NAMES = ("a", "b", "c")
FP = "f" * 16


def _spec(name: str, port: int) -> EndpointSpec:
    return EndpointSpec(name, "neuron", 0.7582, url=f"127.0.0.1:{port}", pool="inf2", max_concurrency=2)


def _fleet(names: Any = NAMES) -> Fleet:
    return Fleet(tuple(_spec(n, 9000 + k) for k, n in enumerate(names)))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _report(client: str, names: List[Optional[str]], ok: List[int], failed: List[int], in_flight: List[int],
            ejected: List[str] = (), seq: int = 0) -> Any:
    n = len(names)
    body = {"v": 1, "client": client, "fleet": FP, "seq": seq, "plan_age_s": 0.1, "names": names,
            "endpoint": {"ok": ok, "over_slo": [0] * n, "failed": failed},
            "keys": [{"model": "m", "class": "interactive", "arrivals": sum(ok), "successes": ok,
                      "failures": failed, "in_flight": in_flight, "latency_s": [0.1] * n}],
            "ejected": list(ejected)}
    return parse_report(json.dumps(body).encode(), NAMES, FP)


def _stats(board: Board) -> Any:
    return board.dispatchers()[("m", "interactive")].stats()


# ---- the plane's slots ------------------------------------------------------------------------------------------

def test_the_set_joins_drains_and_leaves_by_name_and_reuses_a_vacant_slot_with_a_new_generation() -> None:
    s = EndpointSet(NAMES, _fleet().endpoints, discovery=True)
    assert s.apply([_spec("a", 9000), EndpointState(_spec("b", 9001), terminating=True), _spec("c", 9002)]) == \
        ((), (), (1,))  # b drains: its state moved (told as changed)
    assert s.version == 2 and s.state(1) == "draining" and s.serving() == (True, False, True)
    joined, left, _ = s.apply([_spec("a", 9000), _spec("c", 9002), _spec("d", 9003)])
    assert (joined, left) == ((1,), (1,)) and s.names == ["a", "d", "c"] and s.generation == [1, 2, 1]
    assert s.slot("b") is None and s.slot("d") == 1 and s.since[1] == s.version == 3
    joined, left, _ = s.apply([_spec("d", 9003), _spec("e", 9004), _spec("f", 9005)])
    assert set(left) == {0, 2} and sorted(joined) == [0, 2] and s.n == 3  # no growth while a slot is vacant
    before = s.version
    s.apply([_spec("d", 9003), _spec("e", 9004), _spec("f", 9005)])
    assert s.version == before  # nothing changed, no new version
    with pytest.raises(ValueError, match="twice"):
        s.apply([_spec("d", 9003), _spec("d", 9004)])


def test_the_set_travels_with_its_slots_and_states_and_reads_back() -> None:
    s = EndpointSet(NAMES, _fleet().endpoints, discovery=True)
    s.apply([_spec("a", 9000), EndpointState(_spec("c", 9002), terminating=True),
             EndpointState(_spec("d", 9003), ready=False)])
    got = parse_set(json.loads(json.dumps(s.to_wire())))
    assert got.version == s.version and got.discovery and got.slots == {"a": 0, "c": 2, "d": 1}
    states = {st.name: (st.ready, st.terminating, st.spec.url, st.spec.pool) for st in got.states}
    assert states == {"a": (True, False, "127.0.0.1:9000", "inf2"), "c": (True, True, "127.0.0.1:9002", "inf2"),
                      "d": (False, False, "127.0.0.1:9003", "inf2")}
    for bad, what in (({"items": []}, "version"), ({"version": 1, "items": [{"name": "x", "slot": -1}]}, "slot"),
                      ({"version": 1, "items": [{"name": "x", "slot": 0, "url": "h:1", "accelerator": "gpu",
                                                 "price_per_hour": 1},
                                                {"name": "y", "slot": 0, "url": "h:2", "accelerator": "gpu",
                                                 "price_per_hour": 1}]}, "share a slot")):
        with pytest.raises(ValueError, match=what):
            parse_set(bad)


def test_a_plan_moves_to_a_followers_slots_by_name() -> None:
    # the plane: slots a, (vacant, once "b"), c, d; the follower holds d, a, c in slots of its own and a vacant one
    names = ("a", "b", "c", "d")
    mp = ModelPlan("cost", (1.0, 0.0, 3.0, 4.0), (0.0,) * 4, (0.125, 0.0, 0.375, 0.5), (0.25,) * 4)
    plan = Plan(7, 1.0, names, (True, False, True, True), mp, (("m", ModelRoute(mp, (2, 0, 3, 4))),))
    moved = remap_plan(plan, {"a": 0, "c": 2, "d": 3}, ("d", "a", "b", "c"), (False, False, True, False))
    assert moved.endpoints == ("d", "a", "b", "c") and moved.generation == 7
    assert moved.weights("m", "interactive") == (0.5, 0.125, 0.0, 0.375)
    assert moved.limits("m") == (4, 2, 0, 3) and moved.available == (True, True, False, True)
    assert moved.default.interactive_rps == (4.0, 1.0, 0.0, 3.0)
    # a priority route's proportional route moves with it
    spread = ModelPlan("cost", (1.0, 0.0, 3.0, 4.0), (0.0,) * 4, (0.9, 0.0, 0.09, 0.01), (0.25,) * 4)
    priority = Plan(7, 1.0, names, (True, False, True, True), mp,
                    (("m", ModelRoute(spread, (1, 0, 2, 2), proportional=ModelRoute(mp, (2, 0, 3, 4)))),))
    moved = remap_plan(priority, {"a": 0, "c": 2, "d": 3}, ("d", "a", "b", "c"), (False, False, True, False))
    assert moved.weights("m", "interactive") == (0.01, 0.9, 0.0, 0.09) and moved.limits("m") == (2, 1, 0, 2)
    assert moved.proportional().weights("m", "interactive") == (0.5, 0.125, 0.0, 0.375)
    assert moved.proportional().limits("m") == (4, 2, 0, 3)


# ---- reports and the Board ------------------------------------------------------------------------------------

def test_a_reused_slot_inherits_no_load_errors_or_ejection_and_a_left_name_is_dropped() -> None:
    clock = _Clock()
    board = Board(NAMES, expire_s=10.0, clock=clock, fleet=_fleet(), discovery=True)
    ejected: List[int] = []
    board.set_ejector(lambda i, reason, now: ejected.append(i))
    board.ingest(_report("x", ["a", "b", "c"], [0, 0, 0], [0, 0, 0], [0, 0, 0]))
    board.ingest(_report("x", ["a", "b", "c"], [5, 5, 0], [0, 7, 0], [1, 3, 0], seq=1))
    st = _stats(board)
    assert st.successes == (5, 5, 0) and st.failures == (0, 7, 0) and st.in_flight == (1, 3, 0)
    # b leaves, d takes its slot (1): nothing of b's stays there, though x still reports b's requests
    board.apply_endpoints([_spec("a", 9000), _spec("c", 9002), _spec("d", 9003)])
    assert board.endpoint_names()[1] == "d" and board.reap().generations == (1, 2, 1)
    st = _stats(board)
    assert st.successes == (5, 0, 0) and st.failures == (0, 0, 0) and st.in_flight == (1, 0, 0)
    assert board.endpoint_counters()[1] == (0, 0, 0)
    # x has not heard yet: its next report still names b (more errors, ejected): dropped, counted, no ejection
    board.ingest(_report("x", ["a", "b", "c"], [6, 6, 0], [0, 9, 0], [1, 2, 0], ejected=["b"], seq=2))
    st = _stats(board)
    assert st.successes == (6, 0, 0) and st.failures == (0, 0, 0) and st.in_flight == (1, 0, 0)
    assert ejected == [] and board.unknown.get("b", 0) >= 1
    # then x takes the plane's set: b's slot vacant, d in a new slot of its own (3): its figures land on slot 1
    board.ingest(_report("x", ["a", None, "c", "d"], [7, 6, 0, 2], [0, 9, 0, 1], [0, 2, 0, 1], ejected=["d"],
                         seq=3))
    st = _stats(board)
    assert st.successes == (7, 2, 0) and st.failures == (0, 1, 0) and st.in_flight == (0, 1, 0)
    assert ejected == [1]


def test_a_client_slot_that_changed_hands_counts_from_zero() -> None:
    board = Board(("a", "b"), expire_s=10.0, clock=_Clock(), fleet=_fleet(("a", "b")), discovery=True)

    def report(names: List[Optional[str]], ok: List[int], seq: int) -> Any:
        body = {"v": 1, "client": "x", "fleet": FP, "seq": seq, "plan_age_s": 0.1, "names": names,
                "endpoint": {"ok": ok, "over_slo": [0, 0], "failed": [0, 0]}, "keys": [], "ejected": []}
        return parse_report(json.dumps(body).encode(), ("a", "b"), FP)

    board.ingest(report(["a", "b"], [10, 10], 0))
    board.ingest(report(["a", "b"], [12, 15], 1))
    assert board.endpoint_counters() == [(2, 0, 0), (5, 0, 0)]
    board.ingest(report(["b", "a"], [3, 4], 2))  # both of the client's slots reused (fresh counts since)
    assert board.endpoint_counters() == [(6, 0, 0), (8, 0, 0)]


def test_a_report_names_its_slots_sends_them_whole_after_a_change_and_refuses_bad_names() -> None:
    router = Router(_fleet(), seed=1)
    lane = router.lane("m", "interactive")
    t0 = lane.begin()
    lane.succeeded(lane.pick(), t0)
    first, snap = build_report(router, "c", 1, FP, 0.1)
    assert json.loads(first)["names"] == ["a", "b", "c"]
    base = parse_report(first, NAMES, FP)
    sparse = json.loads(build_report(router, "c", 2, FP, 0.1, base=(1, snap))[0])
    assert sparse["base"] == 1 and "names" not in sparse
    router.set_weights("m", "interactive", [0.0, 1.0, 0.0])
    t0 = lane.begin()
    held = lane.pick()  # b holds a request as it leaves: its slot stays vacant, d takes a new one
    router.apply_endpoints([_spec("a", 9000), _spec("c", 9002), _spec("d", 9003)])
    whole = json.loads(build_report(router, "c", 3, FP, 0.1, base=(1, snap))[0])
    assert "base" not in whole and whole["names"] == ["a", None, "c", "d"]
    got = parse_report(json.dumps(whole).encode(), NAMES, FP, lambda client, seq: base)
    assert got.names == ("a", None, "c", "d") and got.ok.size == 4
    lane.succeeded(held, t0)
    for names, what in ((["a", "a", "c", "d"], "twice"), ([1, None, "c", "d"], "endpoint name")):
        with pytest.raises(ReportError, match=what):
            parse_report(json.dumps({**whole, "names": names}).encode(), NAMES, FP)


def test_the_fingerprint_of_a_discovering_fleet_covers_its_static_parts_only() -> None:
    k8s = {"namespace": "inference", "fleet": "sd"}
    a = Fleet.from_dict({"slo_ms": 500, "endpoints": {"kubernetes": k8s}})
    assert fingerprint_of(a) == fingerprint_of(Fleet.from_dict({"slo_ms": 500, "endpoints": {"kubernetes": {
        **k8s, "read_timeout_s": 30}}}))  # how a client watches is its own business
    for other in ({"slo_ms": 400, "endpoints": {"kubernetes": k8s}},
                  {"slo_ms": 500, "endpoints": {"kubernetes": {**k8s, "protocol": "grpc"}}},
                  {"slo_ms": 500, "endpoints": {"kubernetes": {**k8s, "fleet": "other"}}}):
        assert fingerprint_of(Fleet.from_dict(other)) != fingerprint_of(a)
    assert fingerprint_of(_fleet()) == fleet_fingerprint(NAMES)  # a fixed list: its names in order, as before


# ---- the load channel -------------------------------------------------------------------------------------------

def test_the_load_channel_drops_figures_told_for_a_slot_before_another_endpoint_took_it() -> None:
    hub = LoadHub(3, None)
    hub.datagram_received(encode(TELL, {"m": np.array([1, 4, 0])}, 3, 1, None, client=1, set_version=1), ("h", 1))
    assert hub.totals() == {"m": [1, 4, 0]}
    hub.follow(2, (1, 2, 1, 2))  # slot 1 handed to a newcomer at version 2; slot 3 new
    assert hub.totals() == {"m": [1, 0, 0, 0]}
    # a tell still over version 1 (sent before the client heard): its figure at slot 1 is the left endpoint's
    hub.datagram_received(encode(TELL, {"m": np.array([2, 5, 0])}, 3, 2, None, client=1, set_version=1), ("h", 1))
    assert hub.totals() == {"m": [2, 0, 0, 0]}
    hub.datagram_received(encode(TELL, {"m": np.array([2, 1, 0, 3])}, 4, 3, None, client=1, set_version=2),
                          ("h", 1))
    assert hub.totals() == {"m": [2, 1, 0, 3]}
    dropped = hub.dropped
    hub.datagram_received(encode(TELL, {"m": np.zeros(5)}, 5, 4, None, client=1, set_version=2), ("h", 1))
    assert hub.dropped == dropped + 1  # more slots than the plane has


def test_the_load_hubs_timer_runs_only_while_a_client_is_on_the_channel() -> None:
    """A plane whose clients all report over HTTP (a gateway's) takes no wake-ups every 4 ms: the timer starts with
    the first tell and stops once the last client expired."""
    import asyncio

    from tritonmix.control_plane.load import EXPIRE_S

    class Transport:
        def __init__(self) -> None:
            self.sent = 0

        def is_closing(self) -> bool:
            return False

        def sendto(self, data: bytes, addr: object) -> None:
            self.sent += 1

        def close(self) -> None:
            pass

    async def run() -> None:
        hub, transport = LoadHub(3, None), Transport()
        hub.connection_made(transport)
        await asyncio.sleep(0.02)
        assert hub._timer is None and transport.sent == 0
        hub.datagram_received(encode(TELL, {"m": np.array([1, 0, 0])}, 3, 1, None, client=1, set_version=1),
                              ("h", 1))
        assert hub._timer is not None
        await asyncio.sleep(0.02)
        assert transport.sent >= 1
        await asyncio.sleep(EXPIRE_S + 0.05)
        assert hub._timer is None and hub.clients == 0
        hub.close()

    asyncio.run(run())


# ---- replicas ---------------------------------------------------------------------------------------------------

def test_a_replica_finds_itself_in_the_list_by_the_address_it_advertises() -> None:
    from tritonmix.control_plane import ControlPlane
    from tritonmix.controller.signals import NullSource

    other = ControlPlane(_fleet(), signal_source=NullSource(3), load_channel=False).start(tick=False)
    planes = [other]
    try:
        listed = ["first.tritonmix.invalid:8471", other.address]  # this replica is listed first, by a DNS name
        for advertise, role in ((listed[0], "leader"), (None, "standby")):
            plane = ControlPlane(_fleet(), signal_source=NullSource(3), load_channel=False, replicas=listed,
                                 advertise=advertise).start(tick=False)
            planes.append(plane)
            assert plane.role == role, (advertise, plane.role)  # not finding itself, it defers to every listed one
    finally:
        for plane in planes:
            plane.stop()
