"""Local controllers that are safe in numbers: many clients, each with its own controller, on one fleet.

What one client must not do because others share the servers: read a request queued behind other clients' as a
stall (stall.py), cut a capacity estimate for it (estimators.py), fill its in-flight limits as if it were alone
(queueing.effective_limit), scrape an endpoint twice a tick (signals.TickScrapes), probe a dead endpoint at full
rate for as long as it is down (probes.ProbeBackoff), or time out in step with the others (the timer jitter,
loop.py). Fake clocks and fake sources throughout, except the scrape count, which runs the controller's thread
against tiny local HTTP servers.
"""
from __future__ import annotations

import heapq
import http.server
import math
import random
import threading
import time
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pytest

from tritonmix.controller.estimators import CapacityEstimator, CapacityObservation
from tritonmix.controller.loop import JITTER, Controller
from tritonmix.controller.probes import ProbeBackoff
from tritonmix.controller.queueing import effective_limit, inflight_limit
from tritonmix.controller.signals import HttpScraper, TickScrapes, TritonSample
from tritonmix.controller.simulation import FakeClock
from tritonmix.controller.stall import StallWatch
from tritonmix.dispatch_core import DispatchStats
from tritonmix.fleet import Fleet
from tritonmix.request import Router

USUAL_S = 0.067
SLO_S = 0.3
#: the bare stall limit of an endpoint whose usual latency is USUAL_S: max(2 u, u + 0.05, SLO - u)
BARE_LIMIT_S = max(2 * USUAL_S, USUAL_S + 0.05, SLO_S - USUAL_S)


def stats(in_flight: Sequence[int], done: Sequence[int], ewma: Sequence[float]) -> DispatchStats:
    n = len(in_flight)
    return DispatchStats(tuple(in_flight), tuple(done), tuple(done), tuple([0] * n), tuple(ewma), tuple([0.0] * n))


def sample(at_s: float, success: float, pending: float) -> TritonSample:
    return TritonSample(at_s=at_s, ready=True, success=success, failure=0.0, queue_us=0.0, compute_us=0.0,
                        pending=pending)


# ---- the stall watch reads the server's queue ---------------------------------------------------------------------
def test_a_queue_of_other_clients_that_the_server_works_through_is_not_a_stall() -> None:
    """Our one request waits behind 11 of other clients' at a server completing 32 req/s: not a stall while the
    server keeps completing and its queue explains the wait, though the wait is far past the bare limit."""
    w = StallWatch(1, slo_s=SLO_S)
    ours = stats([1], [10], [USUAL_S])
    t, success = 0.0, 100.0
    assert w.look(t, [ours], samples=[sample(t, success, 12.0)]) == []
    while t < 3.0:  # 3 s of scrapes every 0.25 s, each showing 8 more completions and the same queue
        t = round(t + 0.05, 2)
        if abs(t / 0.25 - round(t / 0.25)) < 1e-9:
            success += 8.0
        assert w.look(t, [ours], samples=[sample(t - t % 0.25, success, 12.0)]) == [], t
    # the same silence without the server's view: stalled at the bare limit
    bare = StallWatch(1, slo_s=SLO_S)
    bare.look(0.0, [ours])
    assert bare.look(BARE_LIMIT_S - 0.01, [ours]) == []
    assert [i for i, _ in bare.look(BARE_LIMIT_S + 0.01, [ours])] == [0]


def test_a_frozen_server_is_still_ejected() -> None:
    """The server stops (SIGSTOP): no scrape lands after its last, its counters stop. Alone, ejected at the bare
    limit as without a server view; in a crowd, at most the others' queue it held later."""
    # alone: the server's queue is ours (pending 3 of our 4): the bare limit
    alone = StallWatch(1, slo_s=SLO_S)
    alone.look(0.0, [stats([4], [10], [USUAL_S])], samples=[sample(0.0, 100.0, 0.0)])
    alone.look(0.05, [stats([4], [12], [USUAL_S])], samples=[sample(0.05, 102.0, 3.0)])  # frozen after this
    assert alone.look(0.05 + BARE_LIMIT_S - 0.01, [stats([4], [12], [USUAL_S])]) == []
    assert [i for i, _ in alone.look(0.05 + BARE_LIMIT_S + 0.01, [stats([4], [12], [USUAL_S])])] == [0]
    # in a crowd: 11 of other clients ahead at 32 req/s (0.34 s), then nothing lands any more
    crowd = StallWatch(1, slo_s=SLO_S)
    ours = stats([1], [10], [USUAL_S])
    crowd.look(0.0, [ours], samples=[sample(0.0, 100.0, 12.0)])
    crowd.look(0.25, [ours], samples=[sample(0.25, 108.0, 12.0)])
    due = 0.25 + 11.0 / 32.0 + BARE_LIMIT_S
    assert crowd.look(due - 0.01, [ours], samples=[sample(0.25, 108.0, 12.0)]) == []
    out = crowd.look(due + 0.01, [ours], samples=[sample(0.25, 108.0, 12.0)])
    assert [i for i, _ in out] == [0] and "11 queued ahead" in out[0][1]
    # scrapes still land but the counters stopped (a hung model): the bare limit
    hung = StallWatch(1, slo_s=SLO_S)
    hung.look(0.0, [ours], samples=[sample(0.0, 100.0, 12.0)])
    hung.look(0.1, [ours], samples=[sample(0.1, 100.0, 12.0)])
    assert [i for i, _ in hung.look(BARE_LIMIT_S + 0.01, [ours], samples=[sample(0.2, 100.0, 12.0)])] == [0]


def test_our_own_queue_that_drained_is_not_read_as_other_clients() -> None:
    """At the scrape 3 of our 5 were queued (the server also served others); later one of ours is left and the
    server stops: our drained queue is not another client's, the bare limit applies from our last answer."""
    w = StallWatch(1, slo_s=SLO_S)
    w.look(0.0, [stats([5], [10], [USUAL_S])], samples=[sample(0.0, 100.0, 0.0)])
    w.look(0.05, [stats([5], [11], [USUAL_S])], samples=[sample(0.05, 105.0, 3.0)])
    w.look(0.1, [stats([1], [15], [USUAL_S])])
    assert w.look(0.1 + BARE_LIMIT_S - 0.01, [stats([1], [15], [USUAL_S])]) == []
    assert [i for i, _ in w.look(0.1 + BARE_LIMIT_S + 0.01, [stats([1], [15], [USUAL_S])])] == [0]


def test_a_server_seen_serving_a_crowd_is_presumed_alive_until_its_next_scrape_is_due() -> None:
    """No queue in sight at the scrape (a queue that comes and goes), yet our one request waits past the bare
    limit: the server completed 10 others' requests in the last span, the next scrape is due 0.5 s after it."""
    w = StallWatch(1, slo_s=SLO_S, scrape_period_s=0.5)
    ours = stats([1], [10], [USUAL_S])
    w.look(0.0, [ours], samples=[sample(0.0, 100.0, 0.0)])
    w.look(0.5, [ours], samples=[sample(0.5, 110.0, 0.0)])
    assert w.look(0.5 + 0.5 + BARE_LIMIT_S - 0.01, [ours]) == []  # the scrape due at 1.0 s did not land: stopped
    out = w.look(0.5 + 0.5 + BARE_LIMIT_S + 0.01, [ours])
    assert [i for i, _ in out] == [0] and "serving other clients" in out[0][1]
    # alone (the server's completions are ours), the same silence is judged at the bare limit
    alone = StallWatch(1, slo_s=SLO_S, scrape_period_s=0.5)
    alone.look(0.0, [stats([1], [10], [USUAL_S])], samples=[sample(0.0, 100.0, 0.0)])
    alone.look(0.5, [stats([1], [20], [USUAL_S])], samples=[sample(0.5, 110.0, 0.0)])
    assert [i for i, _ in alone.look(0.5 + BARE_LIMIT_S + 0.01, [stats([1], [20], [USUAL_S])])] == [0]


def test_the_report_cadence_is_added_to_the_silence_limit() -> None:
    w = StallWatch(1, slo_s=SLO_S, report_cadence_s=0.5)
    ours = stats([1], [10], [USUAL_S])
    w.look(0.0, [ours])
    assert w.look(BARE_LIMIT_S + 0.49, [ours]) == []
    assert [i for i, _ in w.look(BARE_LIMIT_S + 0.51, [ours])] == [0]


def test_the_capacity_estimator_does_not_count_a_queue_of_other_clients_as_a_stall() -> None:
    def run(server_completed: int) -> CapacityEstimator:
        est = CapacityEstimator(30.0, 2, slo_s=SLO_S, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
        for _ in range(6):  # 3 s: two of ours in flight, none of ours done
            est.update(CapacityObservation(0.5, server_completed, USUAL_S, 0.3, 10.0, in_flight=2))
        return est

    crowded = run(server_completed=15)  # the server completes others' requests: a queue
    assert not crowded.stalled and crowded.mu_rps > 25.0
    frozen = run(server_completed=0)    # nothing completes at all: a stall
    assert frozen.stalled and frozen.mu_rps < 1.0


def _crowd(clients: int, total_rps: float, seconds: float) -> List[Controller]:
    """``clients`` Routers, each with its own Controller (its own seed), on one simulated fleet (4 x 67 ms and
    2 x 51 ms, one slot each; test_controller_sim's): Poisson arrivals split evenly, each controller ticking every
    interval and watching for stalls every 50 ms, all on one fake clock. Returns the controllers."""
    from tritonmix.controller.simulation import ServerModel
    from tritonmix.controller.simulation.server import SimServer, SimSource
    from tritonmix.dispatch_core import NoEndpointAvailable

    eps = [{"name": f"inf2-{k}", "url": f"127.0.0.1:{9000 + k}", "accelerator": "neuron",
            "price_per_hour": 0.7582, "max_rps": 14.9, "max_concurrency": 1} for k in range(4)]
    eps += [{"name": f"trn1-{k}", "url": f"127.0.0.1:{9100 + k}", "accelerator": "trainium",
             "price_per_hour": 1.3438, "max_rps": 19.6, "max_concurrency": 1} for k in range(2)]
    fleet = Fleet.from_dict({"endpoints": eps, "slo_ms": 250, "controller": {"interval_s": 0.5}})
    clock, rng = FakeClock(1000.0), random.Random(1)
    servers = [SimServer(m, random.Random(rng.random())) for m in [ServerModel(0.067)] * 4 + [ServerModel(0.051)] * 2]
    routers = [Router(fleet, seed=c, clock=clock) for c in range(clients)]
    ctls = [Controller(fleet, r, source=SimSource(servers, clock), clock=clock, seed=c) for c, r in enumerate(routers)]
    events: List[Tuple[float, int, str, Any]] = []
    order = iter(range(10 ** 9))
    rate = total_rps / clients
    for c in range(clients):
        for kind, at in (("tick", rng.random() * 0.5), ("watch", rng.random() * 0.05), ("arrive", 0.0)):
            heapq.heappush(events, (clock() + at, next(order), kind, c))
    while events[0][0] <= 1000.0 + seconds:
        t, _, kind, payload = heapq.heappop(events)
        clock.set(max(t, clock()))
        if kind == "tick":
            ctls[payload].tick()
            heapq.heappush(events, (t + 0.5, next(order), "tick", payload))
        elif kind == "watch":
            ctls[payload].watch_stalls()
            heapq.heappush(events, (t + 0.05, next(order), "watch", payload))
        elif kind == "arrive":
            lane = routers[payload].lane("sd", "interactive")
            lane.begin()
            try:
                i = lane.pick(None)
                request = (payload, i, t)
                done = servers[i].submit(t, request)
                if done is not None:
                    heapq.heappush(events, (done, next(order), "done", request))
            except NoEndpointAvailable:
                pass
            heapq.heappush(events, (t + rng.expovariate(rate), next(order), "arrive", payload))
        else:
            c, i, sent = payload
            routers[c].lane("sd", "interactive").succeeded(i, sent)
            started = servers[i].finish(t)
            if started is not None:
                heapq.heappush(events, (started[1], next(order), "done", started[0]))
    return ctls


def test_eight_clients_on_one_fleet_read_no_queue_as_a_stall() -> None:
    """70% of the fleet's capacity from 8 clients for 30 s: the queues that come and go at the one-slot servers
    often hold a client's request past the bare stall limit (with the stall watch reading our own requests alone,
    this run has 47 stall ejections and 37 mode switches); with the server's view, at most one. Not none: a
    client that has not yet seen the crowd at a server (the server's view needs CROWD_SPANS scrapes) judges it by
    the bare silence, and over eight other trace seeds 0-2 stall ejections remain per run (0-2 before AUTO's
    demand window too, where this seed happened to give 0)."""
    ctls = _crowd(8, 42.0, 30.0)
    stalls = [d.summary for c in ctls for d in c.decisions("eject") if "stalled" in d.summary]
    assert len(stalls) <= 1, stalls
    assert sum(len(c.decisions("mode")) for c in ctls) <= 2


# ---- the controller: stall watch, limits, scrapes, jitter ------------------------------------------------------
class CrowdSource:
    """A scraping source whose samples a test sets; records each poll's ``start``."""

    starts_scrapes = True

    def __init__(self, n: int) -> None:
        self.samples: List[Optional[TritonSample]] = [None] * n
        self.starts: List[bool] = []

    def poll(self, now: float, start: bool = True) -> List[Optional[TritonSample]]:
        self.starts.append(start)
        return list(self.samples)

    def close(self) -> None:
        pass


def _fleet(**controller: Any) -> Fleet:
    eps = [{"name": f"e{k}", "url": f"127.0.0.1:{9600 + k}", "accelerator": "neuron", "price_per_hour": 1.0,
            "max_rps": 50.0, "max_concurrency": 4} for k in range(3)]
    return Fleet.from_dict({"endpoints": eps, "slo_ms": SLO_S * 1000, "mode": "capacity",
                            "controller": {"interval_s": 0.5, **controller}})


def _controller(clock: FakeClock, **kwargs: Any) -> Tuple[Controller, Router, CrowdSource]:
    fleet = _fleet()
    router = Router(fleet, clock=clock, seed=1)
    source = CrowdSource(3)
    return Controller(fleet, router, source=source, clock=clock, jitter=0.0, **kwargs), router, source


def _in_flight_at(router: Router, index: int) -> None:
    """One success (latency USUAL_S) at ``index``, then one request of ours left in flight there."""
    d = router.dispatcher("m", "interactive")
    for leave in (False, True):
        while True:
            i = d.pick()
            if i == index:
                if not leave:
                    d.record(i, USUAL_S, True)
                break
            d.record(i, USUAL_S, True)


def test_the_controller_gives_a_request_queued_behind_others_its_time_and_ejects_a_frozen_server() -> None:
    clock = FakeClock(100.0)
    ctl, router, source = _controller(clock)
    _in_flight_at(router, 0)
    t0 = clock()
    source.samples[0] = sample(t0, 100.0, 12.0)
    ctl.watch_stalls()
    clock.advance(0.25)
    source.samples[0] = sample(clock(), 108.0, 12.0)   # 32 req/s, 11 of others ahead of ours: 0.34 s
    ctl.watch_stalls()
    # the next scrape is due an interval (0.5 s) after this one, longer than the others' queue takes
    while clock() < t0 + 0.25 + 0.5 + BARE_LIMIT_S - 0.02:
        clock.advance(0.02)
        ctl.watch_stalls()
        assert not router.ejected()[0], f"ejected {clock() - t0:.2f} s in, behind other clients' queue"
    for _ in range(4):  # the server stopped at its last scrape: ejected once the queue it held is served
        clock.advance(0.02)
        ctl.watch_stalls()
    assert router.ejected()[0] and not any(router.ejected()[1:])
    assert "queued ahead" in ctl.decisions("eject")[-1].summary
    assert set(source.starts) == {False}, "the stall watch started a scrape"


def test_the_controller_passes_the_report_cadence_to_the_stall_watch() -> None:
    clock = FakeClock(100.0)
    ctl, router, _ = _controller(clock, report_cadence_s=0.5)
    _in_flight_at(router, 1)
    ctl.watch_stalls()
    clock.advance(BARE_LIMIT_S + 0.45)
    ctl.watch_stalls()
    assert not router.ejected()[1]
    clock.advance(0.1)
    ctl.watch_stalls()
    assert router.ejected()[1]


def _limits_after(pending: float, server_done: float) -> Tuple[int, ...]:
    clock = FakeClock(100.0)
    ctl, router, source = _controller(clock)
    _in_flight_at(router, 0)
    source.samples[0] = sample(clock(), 0.0, 0.0)
    ctl.tick()
    clock.advance(0.5)
    source.samples[0] = sample(clock(), server_done, pending)
    return ctl.tick().route("m").limits


def test_the_in_flight_limit_leaves_room_for_the_requests_of_other_clients() -> None:
    """L = floor(C x 0.9 x SLO / s) = floor(4 x 0.9 x 0.3 / 0.08) = 13 alone; the server holds 6 pending, one of
    them ours, and completes 50 req/s where we completed none: 5 of other clients', 13 - 5 = 8 for us."""
    alone = inflight_limit(4, 4 / 50.0, SLO_S)
    assert alone == 13 and _limits_after(pending=0.0, server_done=25.0)[0] == alone
    crowded = _limits_after(pending=6.0, server_done=25.0)
    assert crowded[0] == alone - 5 and crowded[1] == alone
    # alone at the server (it completed only what we did: nothing), a queue there is ours: no cut
    assert _limits_after(pending=6.0, server_done=0.0)[0] == alone
    assert effective_limit(13, 40.0) == 1 and effective_limit(0, 40.0) == 0 and effective_limit(5, 0.9) == 5


def test_tick_scrapes_start_once_per_tick() -> None:
    source = CrowdSource(2)
    scrapes = TickScrapes(source)
    scrapes.poll(0.0)                 # a tick with no lead (driven alone): it starts the scrapes
    scrapes.lead(0.4)                 # the thread's lead scrape
    scrapes.newest(0.45)              # the stall watch: collects only
    scrapes.poll(0.5)                 # the tick after a lead: collects only
    scrapes.poll(1.0)                 # no lead this time: starts
    assert source.starts == [True, True, False, False, True]


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"" if self.path.endswith("/ready") else b"nv_inference_pending_request_count{model=\"m\"} 0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[List[str]]:
    httpds = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer) for _ in range(2)]
    for h in httpds:
        threading.Thread(target=h.serve_forever, daemon=True).start()
    yield [f"127.0.0.1:{h.server_address[1]}" for h in httpds]
    for h in httpds:
        h.shutdown()
        h.server_close()


def test_the_thread_scrapes_each_endpoint_once_per_tick(servers: List[str]) -> None:
    eps = [{"name": f"e{k}", "url": url, "accelerator": "neuron", "price_per_hour": 1.0, "max_rps": 50.0}
           for k, url in enumerate(servers)]
    fleet = Fleet.from_dict({"endpoints": eps, "slo_ms": 300, "mode": "capacity", "controller": {"interval_s": 0.1}})
    router = Router(fleet)
    router.dispatcher("m", "interactive")
    ctl = Controller(fleet, router, metrics_urls={f"e{k}": url for k, url in enumerate(servers)})
    ticks: List[float] = []
    ctl.add_listener(lambda snap: ticks.append(time.monotonic()))
    assert isinstance(ctl.source, HttpScraper)
    ctl.start()
    try:
        time.sleep(1.05)
    finally:
        ctl.stop()
    scrapes = list(ctl.source.scrapes)
    assert len(ticks) >= 6, ticks
    assert all(len(ticks) - 2 <= s <= len(ticks) + 1 for s in scrapes), (scrapes, len(ticks))


def test_two_controllers_with_different_seeds_do_not_time_out_together() -> None:
    """Each controller's dwell, ejection backoff and probation are f times the configured ones, f drawn once per
    controller in [1 - JITTER, 1 + JITTER]; two clients ejecting the same endpoint at the same instant readmit it
    and end its probation at different instants, and leave CAPACITY mode after different dwells."""
    fleet = _fleet(dwell_s=5.0, eject_base_s=2.0)
    readmitted, probation_over, dwells = [], [], []
    for seed in (1, 2):
        clock = FakeClock(100.0)
        ctl = Controller(fleet, Router(fleet, clock=clock), source=CrowdSource(3), clock=clock, seed=seed)
        assert 1.0 - JITTER <= ctl.timer_factor <= 1.0 + JITTER
        ctl.tick()
        ctl.report_failure(0, "latency outlier (stalled: test)", clock())
        while ctl.health.ejected_mask()[0]:
            clock.advance(0.01)
            ctl.tick()
        readmitted.append(clock() - 100.0)
        while ctl.health.outliers.on_probation(0, clock()):
            clock.advance(0.01)
        probation_over.append(clock() - 100.0)
        dwells.append(ctl.decider.auto.dwell_s)
        same = Controller(fleet, Router(fleet, clock=clock), source=CrowdSource(3), clock=clock, seed=seed)
        assert same.timer_factor == ctl.timer_factor, "a seed does not fix the factor"
    assert abs(readmitted[0] - readmitted[1]) >= 0.1, readmitted
    assert abs(probation_over[0] - probation_over[1]) >= 0.1, probation_over
    assert abs(dwells[0] - dwells[1]) >= 0.1 and all(4.0 <= d <= 6.0 for d in dwells), dwells
    plain = Controller(fleet, Router(fleet), source=CrowdSource(3), jitter=0.0)
    assert plain.timer_factor == 1.0 and plain.decider.auto.dwell_s == 5.0


# ---- probe backoff ----------------------------------------------------------------------------------------------
def test_probes_of_a_down_endpoint_back_off_to_one_interval() -> None:
    backoff = ProbeBackoff(2, first_s=0.25, max_s=1.0)  # PROBE_PERIOD x interval, up to an interval of 1 s
    times = [k * 0.125 for k in range(48)]  # the loop looks every 1/8 s for 6 s
    probed = [t for t in times if backoff.due(t, [1]) == [1]]
    assert probed == [0.0, 0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.75], probed  # at once, then 0.25, 0.5, 1, 1 s...
    assert backoff.next_at == 6.75
    assert backoff.due(6.0, []) == [] and backoff.next_at == math.inf  # back up: forgotten
    assert backoff.due(6.125, [1]) == [1] and backoff.due(6.25, [1]) == []  # down again: from the start
    assert backoff.due(6.375, [1]) == [1]


def test_probe_waits_are_jittered_per_client() -> None:
    waits = []
    for seed in (1, 2):
        backoff = ProbeBackoff(1, first_s=0.1, max_s=0.5, jitter=0.2, rng=random.Random(seed))
        backoff.due(0.0, [0])
        waits.append(backoff.next_at)
    assert all(0.08 <= w <= 0.12 for w in waits) and waits[0] != waits[1], waits
