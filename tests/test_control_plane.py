"""The control plane: the report's checks, the Board's merge, limit shares, following and falling back.

Unit tests first (no servers); then live ones: real Triton servers (EMULATED accelerators, time_scale 0.1), one or
two ControlPlane replicas in this process, and tritonmix.http clients that follow them while threads send load.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import threading
import time
import urllib.request
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pytest

import tritonmix.http as httpclient
from tritonmix import Fleet
from tritonmix.control_plane import Board, ControlPlane, ReportError, build_report, parse_report, scale_limits
from tritonmix.control_plane.report import http_call
from tritonmix.control_plane.report import MAX_REPORT_BYTES, fleet_fingerprint
from tritonmix.controller.applier import Applier
from tritonmix.controller.model import ModelPlan
from tritonmix.controller.plan import ModelRoute, Plan
from tritonmix.errors import ConfigError
from tritonmix.local import LocalFleet
from tritonmix.request import Router
from tritonmix.settings import ControlPlaneSettings

NAMES = ("a", "b", "c")


def _fleet(**extra: Any) -> Fleet:
    return Fleet.from_dict({"endpoints": [{"name": n, "url": f"127.0.0.1:{9 + k}", "accelerator": "gpu",
                                           "price_per_hour": 1.0 + k, "max_rps": 10} for k, n in enumerate(NAMES)],
                            **extra})


def _router_with_traffic(fleet: Fleet, ok: int = 3) -> Router:
    router = Router(fleet, seed=1)
    lane = router.lane("m", "interactive")
    for _ in range(ok):
        t0 = lane.begin()
        lane.succeeded(lane.pick(), t0)
    return router


# ---- the report ------------------------------------------------------------------------------------------------

def test_a_report_built_from_a_router_parses_back_with_its_counts() -> None:
    fleet = _fleet()
    router = _router_with_traffic(fleet, ok=5)
    body, _ = build_report(router, "host/1/x", 3, fleet_fingerprint(NAMES), 0.25)
    report = parse_report(body, NAMES, fleet_fingerprint(NAMES))
    assert report.client == "host/1/x" and report.seq == 3 and report.plan_age_s == 0.25
    (key,) = report.keys
    assert (key.model, key.request_class, key.arrivals) == ("m", "interactive", 5)
    assert int(key.successes.sum()) == 5 and int(report.ok.sum()) == 5 and int(key.in_flight.sum()) == 0


def test_a_sparse_report_carries_only_what_changed_and_reads_back_whole() -> None:
    from tritonmix.control_plane.report import StaleBase

    fleet = _fleet()
    router = _router_with_traffic(fleet, ok=5)
    fp = fleet_fingerprint(NAMES)
    first, snap = build_report(router, "c", 1, fp, 0.1)
    base = parse_report(first, NAMES, fp)
    lane = router.lane("m", "interactive")
    t0 = lane.begin()
    i = lane.pick()
    held = lane.begin(), lane.pick()  # one more in flight
    lane.succeeded(i, t0)
    sparse, _ = build_report(router, "c", 2, fp, 0.1, base=(1, snap))
    whole, _ = build_report(router, "c", 2, fp, 0.1)
    raw = json.loads(sparse)
    assert raw["base"] == 1 and len(raw["keys"][0]["idx"]) <= 2 and len(sparse) < len(whole)
    got = parse_report(sparse, NAMES, fp, lambda client, seq: base if (client, seq) == ("c", 1) else None)
    want = parse_report(whole, NAMES, fp)
    for a, b in zip((got.ok, got.over_slo, got.failed), (want.ok, want.over_slo, want.failed)):
        assert a.tolist() == b.tolist()
    (gk,), (wk,) = got.keys, want.keys
    assert gk.arrivals == wk.arrivals == 7 and gk.successes.tolist() == wk.successes.tolist()
    assert gk.in_flight.tolist() == wk.in_flight.tolist() and int(gk.in_flight.sum()) == 1
    assert np.allclose(gk.latency_s, wk.latency_s, equal_nan=True)
    with pytest.raises(StaleBase, match="does not hold"):
        parse_report(sparse, NAMES, fp, lambda client, seq: None)
    with pytest.raises(ReportError, match="distinct endpoint indexes"):
        bad = dict(raw, endpoint={"idx": [0, 0], "ok": [1, 1], "over_slo": [0, 0], "failed": [0, 0]})
        parse_report(json.dumps(bad).encode(), NAMES, fp, lambda client, seq: base)
    lane.succeeded(held[1], held[0])


def test_a_report_carries_the_cancelled_attempts_whole_and_sparse_and_an_older_clients_reads_as_none() -> None:
    fleet = _fleet()
    router = _router_with_traffic(fleet, ok=4)
    fp = fleet_fingerprint(NAMES)
    lane = router.lane("m", "interactive")
    lane.begin()
    i = lane.pick()
    router.record_abandoned(lane.dispatcher, i, 0.2)  # a hedge's loser, cancelled
    first, snap = build_report(router, "c", 1, fp, 0.1)
    base = parse_report(first, NAMES, fp)
    assert base.abandoned is not None and base.abandoned.tolist() == [int(k == i) for k in range(3)]
    assert int(base.keys[0].successes.sum()) == 5  # the cancelled attempt is among the successes
    lane.begin()
    j = lane.pick()
    router.record_abandoned(lane.dispatcher, j, 0.2)
    sparse, _ = build_report(router, "c", 2, fp, 0.1, base=(1, snap))
    assert json.loads(sparse)["endpoint"]["idx"] == [j]
    got = parse_report(sparse, NAMES, fp, lambda client, seq: base)
    assert got.abandoned.tolist() == [int(k == i) + int(k == j) for k in range(3)]
    older = json.loads(first)
    del older["endpoint"]["abandoned"]
    assert parse_report(json.dumps(older).encode(), NAMES, fp).abandoned is None
    with pytest.raises(ReportError, match="endpoint.abandoned"):
        bad = dict(older, endpoint={**older["endpoint"], "abandoned": [0, -1, 0]})
        parse_report(json.dumps(bad).encode(), NAMES, fp)


@pytest.mark.parametrize("mutate, names_what", [
    (lambda r: b"{not json", "not JSON"),
    (lambda r: json.dumps({**r, "fleet": "0" * 16}).encode(), "another fleet"),
    (lambda r: json.dumps({**r, "endpoint": {**r["endpoint"], "ok": [1, 2]}}).encode(), "endpoint.ok"),
    (lambda r: json.dumps({**r, "endpoint": {**r["endpoint"], "failed": [0, -1, 0]}}).encode(), "endpoint.failed"),
    (lambda r: json.dumps({**r, "keys": [{**r["keys"][0], "successes": [1.5, 0, 0]}]}).encode(),
     "keys[0].successes"),
    (lambda r: json.dumps({**r, "keys": [{**r["keys"][0], "latency_s": [-1, None, None]}]}).encode(),
     "keys[0].latency_s"),
    (lambda r: json.dumps({**r, "keys": [{**r["keys"][0], "class": "vip"}]}).encode(), "keys[0].class"),
    (lambda r: json.dumps({**r, "ejected": ["nope"]}).encode(), "unknown endpoint"),
    (lambda r: json.dumps({**r, "client": ""}).encode(), "client"),
    (lambda r: json.dumps({**r, "v": 2}).encode(), "version"),
    (lambda r: b" " * (MAX_REPORT_BYTES + 1), "limit"),
])
def test_a_bad_report_is_refused_with_an_error_that_names_what_is_wrong(mutate: Any, names_what: str) -> None:
    fleet = _fleet()
    good = json.loads(build_report(_router_with_traffic(fleet), "c", 0, fleet_fingerprint(NAMES), -1.0)[0])
    with pytest.raises(ReportError, match=names_what.replace("[", r"\[").replace("]", r"\]")):
        parse_report(mutate(good), NAMES, fleet_fingerprint(NAMES))


# ---- the board ---------------------------------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _report(client: str, ok: List[int], arrivals: int, in_flight: List[int], latency: List[Any],
            ejected: List[str] = (), abandoned: Optional[List[int]] = None) -> Any:
    endpoint = {"ok": ok, "over_slo": [0, 0, 0], "failed": [0, 0, 0]}
    if abandoned is not None:
        endpoint["abandoned"] = abandoned
    body = {"v": 1, "client": client, "fleet": fleet_fingerprint(NAMES), "seq": 0, "plan_age_s": 0.1,
            "endpoint": endpoint,
            "keys": [{"model": "m", "class": "interactive", "arrivals": arrivals, "successes": ok,
                      "failures": [0, 0, 0], "in_flight": in_flight, "latency_s": latency}],
            "ejected": list(ejected)}
    return parse_report(json.dumps(body).encode(), NAMES, fleet_fingerprint(NAMES))


def test_the_board_adds_each_clients_growth_after_its_baseline_and_sums_gauges() -> None:
    clock = _Clock()
    board = Board(NAMES, expire_s=1.5, clock=clock)
    board.ingest(_report("x", [100, 0, 0], 100, [1, 0, 0], [0.1, None, None]))   # baseline: history not landed
    board.ingest(_report("y", [0, 50, 0], 50, [0, 2, 0], [None, 0.3, None]))
    assert board.arrivals()[("m", "interactive")] == 0
    stats = board.dispatchers()[("m", "interactive")].stats()
    assert stats.in_flight == (1, 2, 0) and stats.successes == (0, 0, 0)
    clock.now += 0.5
    board.ingest(_report("x", [110, 0, 0], 112, [0, 0, 0], [0.2, None, None]))
    board.ingest(_report("y", [0, 55, 0], 56, [0, 3, 0], [None, 0.3, None]))
    stats = board.dispatchers()[("m", "interactive")].stats()
    assert board.arrivals()[("m", "interactive")] == 12 + 6
    assert stats.successes == (10, 5, 0) and stats.in_flight == (0, 3, 0)
    assert stats.ewma_latency_s[0] == pytest.approx(0.2) and np.isnan(stats.ewma_latency_s[2])
    assert board.endpoint_counters()[:2] == [(10, 0, 0), (5, 0, 0)]
    assert board.share("x")["m"] == pytest.approx(12 / 18) and board.share("y")["m"] == pytest.approx(6 / 18)
    clock.now += 1.0
    board.ingest(_report("x", [120, 0, 0], 120, [2, 0, 0], [0.2, None, None]))
    clock.now += 0.6  # y silent for 1.6 s > expire_s: it leaves, its in-flight with it, its counts stay
    assert board.expire() == ["y"]
    stats = board.dispatchers()[("m", "interactive")].stats()
    assert stats.in_flight == (2, 0, 0) and stats.successes == (20, 5, 0) and board.client_count == 1
    clock.now += 0.2  # x silent for 0.8 s > gauge_expire_s (0.75): a silent client's requests are not stuck ones
    assert board.dispatchers()[("m", "interactive")].stats().in_flight == (0, 0, 0) and board.client_count == 1
    board.ingest(_report("x", [121, 0, 0], 121, [1, 0, 0], [0.2, None, None]))  # back: its gauges with it
    assert board.dispatchers()[("m", "interactive")].stats().in_flight == (1, 0, 0)
    board.ingest(_report("x", [122, 0, 0], 122, [1, 0, 0], [0.2, None, None]), final=True)  # goodbye
    assert board.client_count == 0 and board.dispatchers()[("m", "interactive")].stats().in_flight == (0, 0, 0)
    assert board.arrivals()[("m", "interactive")] == 18 + 8 + 1 + 1


def test_a_client_that_restarts_counts_from_zero_and_a_new_ejection_reaches_the_ejector_once() -> None:
    board = Board(NAMES, expire_s=10, clock=_Clock())
    seen = []
    board.set_ejector(lambda i, reason, now: seen.append((i, reason)))
    board.ingest(_report("x", [100, 0, 0], 100, [0, 0, 0], [0.1, None, None]))
    board.ingest(_report("x", [3, 0, 0], 4, [0, 0, 0], [0.1, None, None], ejected=["b"]))
    board.ingest(_report("x", [5, 0, 0], 6, [0, 0, 0], [0.1, None, None], ejected=["b"]))
    assert board.arrivals()[("m", "interactive")] == 4 + 2
    assert [i for i, _ in seen] == [1] and "seen by client x" in seen[0][1]


def test_the_planes_stall_watch_ejects_an_endpoint_whose_answers_are_all_cancelled_hedge_losers() -> None:
    """Two hedging clients; endpoint a froze: every request on it is answered by its copy elsewhere and the
    attempt on a cancelled, which the client counts as a completion (not a failure). The board keeps the clients'
    cancelled counts apart, so the plane's stall watch (the client's own rule) sees no answer from a and ejects it;
    clients that do not report cancelled attempts (older ones) leave it blind, as before."""
    from tritonmix.controller.stall import StallWatch

    def run(report_cancelled: bool) -> List[Tuple[float, int]]:
        clock = _Clock()
        board = Board(NAMES, expire_s=10, clock=clock)
        watch = StallWatch(3, factor=2.0, slack_s=0.0)
        ok, cancelled, stalled = {"x": [100, 100, 0], "y": [50, 50, 0]}, {"x": 0, "y": 0}, []
        for tick in range(12):  # a report per client every 0.1 s; a answers until 0.2 s, then is silent
            for c in ("x", "y"):
                ok[c][0] += 1
                ok[c][1] += 1
                frozen = tick >= 3
                cancelled[c] += int(frozen)
                board.ingest(_report(c, list(ok[c]), sum(ok[c]), [1, 0, 0], [0.1, 0.1, None],
                                     abandoned=[cancelled[c], 0, 0] if report_cancelled else None))
            stats, abandoned = board.stall_view()
            stalled += [(round(clock.now - 100.0, 2), i) for i, _ in watch.look(clock.now, stats, abandoned=abandoned)]
            clock.now += 0.1
        return stalled

    # a alone, first judged once its silence passed 2 x its 0.1 s usual latency after its last answer (0.2 s);
    # the loop would eject it there (here it is judged again each silence, nothing ejects it)
    stalled = run(report_cancelled=True)
    assert stalled and stalled[0] == (0.5, 0) and {i for _, i in stalled} == {0}, stalled
    assert run(report_cancelled=False) == []     # the blind spot without the counts


# ---- limits, the applier, settings ----------------------------------------------------------------------------

def _plan(generation: int, names=NAMES, limits=(4, 0, 1), available=(True, True, True)) -> Plan:
    n = len(names)
    mp = ModelPlan(mode="cost", interactive_rps=(1.0,) * n, batch_rps=(0.0,) * n,
                   interactive_weights=(1.0 / n,) * n, batch_weights=(1.0 / n,) * n)
    return Plan(generation, 0.0, tuple(names), tuple(available), mp, (("m", ModelRoute(mp, tuple(limits))),))


def test_limits_are_scaled_to_the_clients_share_with_one_slot_at_least() -> None:
    plan = _plan(1, limits=(8, 0, 2))
    assert scale_limits(plan, {"m": 0.25}).limits("m") == (2, 0, 1)
    assert scale_limits(plan, {"m": 1.0}).limits("m") == (8, 0, 2)
    assert scale_limits(plan, {}).limits("m") == (8, 0, 2)
    shares = [0.5, 0.3, 0.2]
    assert sum(scale_limits(plan, {"m": s}).limits("m")[0] for s in shares) == 8
    # a priority route's proportional route (what a gateway writes to Envoy) is scaled alike
    route = plan.route("m")
    priority = dataclasses.replace(plan, models=(("m", ModelRoute(route.plan, (6, 0, 2), proportional=route)),))
    scaled = scale_limits(priority, {"m": 0.5})
    assert scaled.limits("m") == (3, 0, 1) and scaled.proportional().limits("m") == (4, 0, 1)


def test_a_follower_applier_takes_availability_starts_afresh_on_another_source_and_refuses_strangers() -> None:
    router = _router_with_traffic(_fleet())
    applier = Applier(router, follow_available=True)
    assert applier.offer(_plan(5, available=(True, False, True)), source="p1")
    assert not router.is_available("m", 1)
    assert not applier.offer(_plan(4), source="p1")
    assert applier.refused.get("stale") == 1
    assert applier.offer(_plan(1), source="p2") and router.is_available("m", 1)
    before = router.dispatcher("m").weights()
    assert not applier.offer(_plan(9, names=("a", "b", "zz")), source="p2")
    assert applier.refused.get("endpoints") == 1 and router.dispatcher("m").weights() == before


def test_the_fleet_file_names_the_control_plane_and_reads_back_the_same() -> None:
    for value in ("10.0.0.7:8470", ["h1:1", "h2:2"], {"replicas": ["h:1"], "token_env": "MY_TOKEN"}):
        fleet = _fleet(control_plane=value)
        assert Fleet.from_dict(fleet.to_dict()).control_plane == fleet.control_plane
    assert _fleet(control_plane="h1:1,h2:2").control_plane.replicas == ("h1:1", "h2:2")
    for bad, what in ((5, "expected host:port"), ({"replica": ["h:1"]}, "unknown field"), ([], "at least one"),
                      (["a b:1"], "not a host:port")):
        with pytest.raises(ConfigError, match=what):
            _fleet(control_plane=bad)


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRITONMIX_CONTROL_PLANE_TOKEN", "from-env")
    assert ControlPlaneSettings(replicas=("h:1",)).token() == "from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert ControlPlaneSettings(replicas=("h:1",), token_file=str(tmp_path / "t")).token() == "from-file"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        ControlPlaneSettings(replicas=("h:1",), token_file=str(tmp_path / "empty")).token()


def test_a_plane_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="beyond loopback"):
        ControlPlane(_fleet(), listen="0.0.0.0:0")


# ---- live ------------------------------------------------------------------------------------------------------

INTERVAL_S = 0.25
FLEET = {
    "slo_ms": 400, "time_scale": 0.1, "mode": "cost",
    "controller": {"interval_s": INTERVAL_S, "dwell_s": 0.5},
    "endpoints": [
        {"name": "cheap", "accelerator": "neuron", "price_per_hour": 0.7582, "max_concurrency": 2,
         "profile": {"base": "inf2.xlarge", "concurrency": 2}},
        {"name": "dear", "accelerator": "trainium", "price_per_hour": 1.3438, "max_concurrency": 2,
         "profile": {"base": "trn1.2xlarge", "concurrency": 2}},
    ],
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(FLEET)) as local:
        yield local


class Load:
    """``threads`` threads, each sending requests back to back through its own client; counts and failures."""

    def __init__(self, clients: List[Any], threads_per_client: int = 2) -> None:
        self.clients = clients
        self.ok = 0
        self.failed: List[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(len(clients) * threads_per_client)
        self._futures = [self._pool.submit(self._run, c) for c in clients for _ in range(threads_per_client)]

    def _run(self, client: Any) -> None:
        prompt = httpclient.InferInput("prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
        while not self._stop.is_set():
            try:
                client.infer("stable_diffusion", [prompt])
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown by the test
                with self._lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for f in self._futures:
            f.result(timeout=30)
        self._pool.shutdown()


def _wait(predicate: Any, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.01)
    return time.monotonic() - start


def test_clients_follow_one_plane_that_scrapes_once_per_tick_and_fall_back_and_return_without_a_failure(
        fleet: LocalFleet) -> None:
    plane = ControlPlane(fleet.fleet).start()
    clients = [httpclient.InferenceServerClient(fleet=fleet.fleet, control_plane=plane.address, seed=k)
               for k in range(3)]
    load = Load(clients)
    restarted = None
    try:
        _wait(lambda: all(c.controller.following for c in clients), 3.0, "every client follows the plane")
        _wait(lambda: plane.board.client_count == 3 and plane.ticks >= 12, 10.0, "three clients reporting")
        st = plane.status()
        ticks = st["ticks"]
        # one scrape per endpoint per tick (the tick's own; +1: a scrape may be running when we read)
        assert all(ticks - 1 <= s <= ticks + 1 for s in st["scrapes"]), (st["scrapes"], ticks)
        assert all(c.controller.source is None for c in clients)  # followers do not scrape
        assert sum(st["demand_rps"].values()) > 0 and len(st["clients"]) == 3
        plan = plane.controller.plan
        assert all(c.controller.plan.generation >= plan.generation - 1 for c in clients)
        address = plane.address
        plane.stop()
        t_fall = _wait(lambda: all(c.controller.local is not None for c in clients), 3.0, "fallback")
        print(f"\nfallback {t_fall:.2f} s after the plane stopped (interval {INTERVAL_S} s)")
        assert t_fall <= 2 * INTERVAL_S + 0.35
        time.sleep(0.5)
        restarted = ControlPlane(fleet.fleet, listen=address).start()
        t_back = _wait(lambda: all(c.controller.following for c in clients), 3.0, "following again")
        print(f"following again {t_back:.2f} s after the plane restarted")
        assert t_back <= 2 * INTERVAL_S + 0.35 and all(c.controller.local is None for c in clients)
        time.sleep(0.5)
    finally:
        load.stop()
        for c in clients:
            c.close()
        plane.stop()
        if restarted is not None:
            restarted.stop()
    assert load.failed == [] and load.ok > 100


def test_a_standby_replica_mirrors_instead_of_scraping_and_takes_over_when_the_leader_dies(fleet: LocalFleet) -> None:
    first = ControlPlane(fleet.fleet).start()
    second = ControlPlane(fleet.fleet, replicas=[first.address, "127.0.0.1:0"]).start()
    replicas = [first.address, second.address]
    second.replicas = tuple(replicas)
    clients = [httpclient.InferenceServerClient(fleet=fleet.fleet, control_plane=replicas, seed=k) for k in range(2)]
    load = Load(clients)
    try:
        _wait(lambda: second.role == "standby" and second.source.mirrored > 3, 5.0, "the second replica stands by")
        _wait(lambda: all(c.controller.following == "http://" + first.address for c in clients), 3.0, "follow first")
        assert not any(second.status()["scrapes"])  # it mirrors the leader's samples: no scrape of its own
        assert second.board.client_count == 2  # clients report to every replica
        first.stop()
        t = _wait(lambda: all(c.controller.following == "http://" + second.address for c in clients), 3.0,
                  "follow the second replica")
        print(f"\nclients follow the second replica {t:.2f} s after the first stopped")
        _wait(lambda: second.role == "leader" and sum(second.status()["scrapes"]) > 0, 3.0, "second scrapes")
        time.sleep(0.5)
    finally:
        load.stop()
        for c in clients:
            c.close()
        first.stop()
        second.stop()
    assert load.failed == [] and load.ok > 20


def test_a_client_that_cannot_reach_its_plane_serves_as_a_local_client(fleet: LocalFleet) -> None:
    client = httpclient.InferenceServerClient(fleet=fleet.fleet, control_plane="127.0.0.1:9", seed=5)
    load = Load([client])
    try:
        _wait(lambda: client.controller.local is not None, 2 * INTERVAL_S + 1.0, "fallback")
        time.sleep(1.0)
        assert "no plan" in client.controller.decisions("plane")[-1].summary
    finally:
        load.stop()
        client.close()
    assert load.failed == [] and load.ok > 20


def test_bad_requests_are_refused_with_a_clear_error_and_change_nothing(fleet: LocalFleet) -> None:
    plane = ControlPlane(fleet.fleet, token="s3cret").start()
    follower_router = Router(fleet.fleet, seed=1)
    good, _ = build_report(_traffic(follower_router), "client-1", 0, plane.fingerprint, -1.0)
    url = plane.url + "/v1/sync?wait=0"
    auth = {"Authorization": "Bearer s3cret"}
    try:
        _wait(lambda: plane.ticks >= 2, 5.0, "ticks")
        status, body = http_call(url, method="POST", body=good, headers={"Authorization": "Bearer nope"})
        assert status == 401 and b"token" in body
        status, body = http_call(url, method="POST", body=good)
        assert status == 401
        status, body = http_call(url, method="POST", body=b'{"v": 1, "client": "x"}', headers=auth)
        assert status == 400 and b"fleet" in body
        status, body = http_call(url, method="POST", body=b"x" * (MAX_REPORT_BYTES + 10), headers=auth)
        assert status == 413 and b"larger" in body
        status, body = http_call(plane.url + "/v1/status", headers={})
        assert status == 401
        assert plane.board.reports == 0 and plane.board.client_count == 0
        assert plane.refused == {"token": 3, "malformed": 1, "size": 1}
        status, body = http_call(url, method="POST", body=good, headers=auth)
        assert status == 200 and json.loads(body)["plan"]["endpoints"] == ["cheap", "dear"]
        assert plane.board.client_count == 1
        with urllib.request.urlopen(plane.url + "/metrics", timeout=5) as resp:  # open: no token
            text = resp.read().decode()
        assert 'tritonmix_plane_refused_total{reason="token"} 3.0' in text and "tritonmix_plane_clients 1.0" in text
    finally:
        plane.stop()


def _traffic(router: Router) -> Router:
    lane = router.lane("stable_diffusion", "interactive")
    t0 = lane.begin()
    lane.succeeded(lane.pick(), t0)
    return router


def test_the_cli_starts_a_plane_prints_its_address_and_stops_on_sigterm(tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    fleet_file = tmp_path / "fleet.yaml"
    _fleet().to_yaml(fleet_file)
    proc = subprocess.Popen([sys.executable, "-m", "tritonmix", "control-plane", "--fleet", str(fleet_file),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("tritonmix control plane ready: http://127.0.0.1:"), line + proc.stderr.read()
        base = line.split()[4]
        _wait(lambda: http_call(base + "/v1/health")[0] == 200, 5.0, "health")
        out = subprocess.run([sys.executable, "-m", "tritonmix", "status", "--control-plane", base[len("http://"):],
                              "--once"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "control plane" in out.stdout and "0 clients" in out.stdout, out.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "control plane stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "tritonmix", "control-plane", "--fleet", str(fleet_file),
                          "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TRITONMIX_CONTROL_PLANE_TOKEN": ""})
    assert bad.returncode == 2 and "beyond loopback" in bad.stderr


# ---- the load channel ---------------------------------------------------------------------------------------------

def test_load_messages_round_trip_and_a_bad_mac_or_size_is_dropped() -> None:
    from tritonmix.control_plane.load import LOAD, TELL, decode, encode

    figures = {"m": np.array([3, 0, 70000]), "other": np.array([0, 1, 2])}
    data = encode(TELL, figures, 3, 7, b"k", client=42)
    kind, client, seq, got = decode(data, 3, b"k")
    assert (kind, client, seq) == (TELL, 42, 7)
    assert got["m"].tolist() == [3, 0, 65535] and got["other"].tolist() == [0, 1, 2]
    assert decode(data, 3, b"other-key") is None and decode(data, 4, b"k") is None
    assert decode(data[:-17] + data[-16:], 3, b"k") is None and decode(b"junk", 3, None) is None
    assert decode(encode(LOAD, {}, 3, 1, None), 3, None) == (LOAD, 0, 1, {})


def test_followers_learn_each_others_requests_in_flight_through_the_plane() -> None:
    from tritonmix.control_plane.load import LoadTeller
    from tritonmix.controller.signals import NullSource

    plane = ControlPlane(_fleet(), signal_source=NullSource(3), token="t").start(tick=False)
    host, port = plane.address.rsplit(":", 1)
    routers = [Router(_fleet(), seed=k) for k in range(2)]
    lanes = [r.lane("m", "interactive") for r in routers]
    for d in (r.dispatcher("m") for r in routers):
        d.set_weights([1.0, 0.0, 0.0])
    tellers = [LoadTeller(r, "t", client=k + 1) for k, r in enumerate(routers)]
    try:
        for t in tellers:
            t.retarget(host, int(port))
        held = [(lanes[0].begin(), lanes[0].pick()) for _ in range(3)]
        assert {i for _, i in held} == {0}

        def others_seen_by_1(expected: tuple) -> bool:
            for t in tellers:
                t.step(time.monotonic())
            return routers[1].dispatcher("m").external() == expected

        _wait(lambda: others_seen_by_1((3, 0, 0)), 2.0, "follower 1 sees follower 0's three requests")
        assert routers[0].dispatcher("m").external() == (0, 0, 0)  # its own do not count twice
        assert plane.status()["load_channel"]["in_flight"]["m"] == [3, 0, 0]
        stranger = LoadTeller(routers[1], "wrong", client=9)
        stranger.retarget(host, int(port))
        stranger.step(time.monotonic())
        _wait(lambda: plane.load.dropped >= 1, 2.0, "a datagram with a wrong MAC is dropped")
        stranger.close()
        for t0, i in held:
            lanes[0].succeeded(i, t0)
        _wait(lambda: others_seen_by_1((0, 0, 0)), 2.0, "follower 1 sees them done")
    finally:
        for t in tellers:
            t.close()
        plane.stop()


def test_over_tls_with_a_token_a_grpc_and_an_aio_client_follow(fleet: LocalFleet, tmp_path: Any) -> None:
    """TLS (a self-signed certificate the clients trust through ca_file) and a bearer token from a file; the gRPC
    and asyncio HTTP drop-ins follow as the sync HTTP one does."""
    import asyncio
    import shutil
    import ssl
    import subprocess

    import tritonmix.grpc as grpcclient
    import tritonmix.http.aio as aioclient

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    (tmp_path / "token").write_text("tls-token\n")
    plane = ControlPlane(fleet.fleet, token="tls-token", tls_cert=str(cert), tls_key=str(key)).start()
    settings = {"replicas": [plane.url], "token_file": str(tmp_path / "token"), "ca_file": str(cert)}
    grpc_fleet = Fleet.from_dict({**fleet.fleet.to_dict(), "endpoints": [
        {**e.to_dict(), "url": fleet.endpoints[e.name].grpc_url, "protocol": "grpc"} for e in fleet.fleet.endpoints]})
    sync = grpcclient.InferenceServerClient(fleet=grpc_fleet, control_plane=settings, seed=1)

    async def aio_follows() -> Any:
        client = aioclient.InferenceServerClient(fleet=fleet.fleet, control_plane=settings, seed=2)
        try:
            deadline = time.monotonic() + 3.0
            while not client.controller.following:
                assert time.monotonic() < deadline, "the aio client does not follow"
                await asyncio.sleep(0.02)
            prompt = aioclient.InferInput("prompt", [1], "BYTES")
            prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
            return await client.infer("stable_diffusion", [prompt])
        finally:
            await client.close()

    try:
        _wait(lambda: sync.controller.following == plane.url, 3.0, "the gRPC client follows over TLS")
        prompt = grpcclient.InferInput("prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
        assert sync.infer("stable_diffusion", [prompt]).as_numpy("image") is not None
        assert asyncio.run(aio_follows()).as_numpy("image") is not None
        assert plane.refused.get("token", 0) == 0 and plane.board.reports > 0
        status, _ = http_call(plane.url + "/v1/status", ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert status == 401  # TLS alone is not the token
    finally:
        sync.close()
        plane.stop()


def test_a_stopped_plane_frees_its_load_channel_port_for_the_next_one() -> None:
    """stop() closes the UDP socket too, so a plane restarted on the same port gets its load channel back."""
    import logging

    from tritonmix.controller.signals import NullSource

    warnings: List[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("tritonmix.control_plane.plane")
    log.addHandler(handler)
    try:
        first = ControlPlane(_fleet(), signal_source=NullSource(3), token="t").start(tick=False)
        address = first.address
        first.stop()
        second = ControlPlane(_fleet(), listen=address, signal_source=NullSource(3), token="t").start(tick=False)
        second.stop()
    finally:
        log.removeHandler(handler)
    assert not [w for w in warnings if "no load channel" in w], warnings
