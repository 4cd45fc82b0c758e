"""Faults under load: 32 concurrent callers on a local fleet of three real Triton servers (EMULATED accelerators),
through the sync and the aio clients. Every request must end exactly once; the figures each test measured are
printed at the end of the run (see conftest.py).

    SIGKILL an endpoint     no client-visible failure; in-flight counts back to 0
    restart it              it serves again within two controller intervals of being ready
    one endpoint 10x slower shed or ejected; SLO attainment >= 99%
    every endpoint down     each request fails fast (UNAVAILABLE / 503) within its deadline; the same client
                            serves again once they are back
    flapping (1 s up/down)  extra load on the servers stays within the retry budget (no retry storm)
    close() under load      in-flight requests finish or fail cleanly; no thread or socket left behind
"""
from __future__ import annotations

import gc
import math
import threading
import time
from typing import Any, Dict, Set, Tuple

import pytest
from tritonclient.utils import InferenceServerException

from reliability_support import (INTERVAL_S, SLO_MS, BudgetCounter, FlappingProxy, LagMonitor, Load,
                                 assert_nothing_in_flight, attempts, client_fleet, is_unavailable,
                                 open_tcp_connections, served_by)
from tritonmix.local import LocalFleet

pytestmark = pytest.mark.timeout(240)

SYNC_AND_AIO = ["sync-http", "aio-grpc", "sync-grpc", "aio-http"]
#: the flapping test's length in make test; the soak (benches/test_soak.py) runs the issue's full 30 s
FLAP_S = 6.0


def _busiest(client: Any) -> int:
    counts = [c[0] for c in client.router.endpoint_counters()]
    return counts.index(max(counts))


def _figures(figures: Dict[str, Any], load: Load, check_arrivals: bool = True, **more: Any) -> None:
    requests, picks, _ = attempts(load.client)
    entries = load.ledger.all()
    figures.update(requests_sent=requests, failures_seen=len(load.ledger.failures()),
                   extra_attempts=picks - requests, **more)
    assert not check_arrivals or len(entries) == requests, f"ledger {len(entries)} vs client arrivals {requests}"


class ReadmitTooSlow(AssertionError):
    """A restarted endpoint got no traffic within two controller intervals of being ready."""


READMIT_MODES = ["sync-http", "aio-grpc", "sync-grpc", "aio-http", "callback-grpc"]


@pytest.mark.parametrize("mode", READMIT_MODES)
def test_sigkill_loses_nothing_and_restart_is_readmitted(healthy: LocalFleet, mode: str,
                                                        figures: Dict[str, Any]) -> None:
    """No client-visible failure when the busiest endpoint is SIGKILLed under load, and the restarted endpoint takes
    traffic within two controller intervals of being ready. The timing is measured once more when a run misses it
    (as the slow-endpoint test does: one stall of a loaded 2-core machine can hold a readmission past the limit);
    two misses in a row fail."""
    missed = []
    for attempt in (1, 2):
        readmit_s, name, ejected = _kill_and_restart(healthy, mode, figures)
        figures.update(attempt=attempt)
        if readmit_s <= 2 * INTERVAL_S:
            return
        missed.append(f"{name} took {readmit_s:.2f} s to get traffic after it was ready again (two intervals: "
                      f"{2 * INTERVAL_S:.2f} s); ejected={ejected}")
        figures[f"attempt_{attempt}_missed"] = missed[-1]
    raise ReadmitTooSlow("twice: " + "; ".join(missed))


def _kill_and_restart(healthy: LocalFleet, mode: str, figures: Dict[str, Any]) -> Tuple[float, str, Any]:
    """One run: kill the busiest endpoint under load, restart it; the failure checks asserted; (time from ready to
    its first request served, its name, the router's ejections at the end)."""
    protocol = mode.split("-")[1]
    with Load(mode, client_fleet(healthy, protocol), deadline_s=10.0) as load:
        load.wait_requests(96)
        budget = BudgetCounter(load.client)
        victim = _busiest(load.client)
        name = healthy.fleet.names[victim]
        healthy.kill(name)
        killed_at = time.monotonic()
        load.wait_requests(len(load.ledger.all()) + 128)  # a couple of seconds of load without it
        served_before = served_by(load.client, victim)
        healthy.restart(name)  # returns once the server answers ready
        readmit_s = load.wait_for(lambda: served_by(load.client, victim) > served_before, 30.0,
                                  f"{name} serving again after its restart")
        load.wait_requests(len(load.ledger.all()) + 64)
        ledger = load.stop()
        ledger.check_each_ended_once()
        failed = ledger.failures()
        _figures(figures, load, fault=f"SIGKILL {name}", retries_charged=budget.granted,
                 down_s=round(time.monotonic() - killed_at, 1), time_to_readmit_s=readmit_s)
        # tritonclient's InferenceServerException repr shows no message: name the type, status and text
        assert not failed, (f"{len(failed)} client-visible failures, first after "
                            f"{failed[0].ended_s - failed[0].started_s:.3f} s: {type(failed[0].error).__name__} "
                            f"status={getattr(failed[0].error, 'status', lambda: None)()!r}: {failed[0].error}")
        assert_nothing_in_flight(load.client)
        # The kill is felt either by a request that failed over or by a readiness probe that saw it down first.
        felt = load.client.router.endpoint_counters()[victim][2] >= 1 or any(
            d.kind in ("down", "eject") and d.endpoint == name for d in load.client.decisions())
        assert felt, f"the kill of {name} was never felt: no failed attempt on it and no down/eject decision"
        return readmit_s, name, load.client.router.ejected()


def _picks(client: Any, index: int) -> Tuple[int, int]:
    """(picks of endpoint ``index``, picks of all) over the client's dispatchers: counted when sent."""
    mine = total = 0
    for d in client.router.dispatchers().values():
        p = d.stats().picks
        mine, total = mine + p[index], total + sum(p)
    return mine, total


def _shed(client: Any, index: int) -> bool:
    snap = client.controller_view()
    row = snap.endpoints[index] if snap is not None else None
    return row is not None and (row.interactive_weight == 0.0 or row.ejected or not row.healthy)


def slow_endpoint_run(local: LocalFleet, mode: str, run_s: float) -> Dict[str, Any]:
    """Slow the busiest endpoint down 10x under load for ``run_s``; what happened (shared with the soak)."""
    protocol = mode.split("-")[1]
    slow = None
    try:
        with LagMonitor() as lag, Load(mode, client_fleet(local, protocol), deadline_s=10.0) as load:
            load.wait_requests(96)
            started = time.monotonic()
            index = _busiest(load.client)
            slow = local.fleet.names[index]
            local.slow_down(slow, 10.0)
            shed_s = load.wait_for(lambda: _shed(load.client, index), 30.0, f"{slow} shed or ejected")
            shed_at = time.monotonic()
            picks_at_shed = _picks(load.client, index)
            load.wait_for(lambda: time.monotonic() - started >= run_s, run_s + 30.0, "the run")
            ledger = load.stop()
            picks_late = _picks(load.client, index)
            assert_nothing_in_flight(load.client)
            requests, picks, _ = attempts(load.client)
    finally:
        if slow is not None:
            local.slow_down(slow, 1.0)
    ledger.check_each_ended_once()
    slo_s = SLO_MS / 1000.0

    def attainment(entries: list) -> float:
        return sum(1 for e in entries if e.ok and e.latency_s <= slo_s) / max(1, len(entries))

    run, after_shed = ledger.between(started), ledger.between(shed_at)
    late_picks = picks_late[1] - picks_at_shed[1]
    missed = sorted((e.started_s - shed_at, e.latency_s) for e in after_shed if not (e.ok and e.latency_s <= slo_s))
    return {"fault": f"{slow} x10 slower", "requests_sent": requests, "failures_seen": len(ledger.failures()),
            "extra_attempts": picks - requests, "requests_in_run": len(run), "time_to_shed_s": shed_s,
            "slo_attainment_run": attainment(run), "slo_misses_run": sum(1 for e in run if e.latency_s > slo_s),
            "slo_attainment_after_shed": attainment(after_shed), "requests_after_shed": len(after_shed),
            "slow_share_after_shed": (picks_late[0] - picks_at_shed[0]) / max(1, late_picks),
            # when the misses after shedding started (s after the shed) and what they took, and the test process's
            # worst scheduling stall in that time: a burst of misses at one moment with a stall beside it is the
            # machine, not the router
            "misses_after_shed": " ".join(f"{t:.2f}s/{d * 1000:.0f}ms" for t, d in missed[:12]),
            "worst_stall_after_shed_s": lag.worst_s(shed_at)}


class SloMissed(AssertionError):
    """The slow endpoint was shed too late, or SLO attainment after shedding fell below 99%, in two runs."""


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_ten_times_slower_endpoint_is_shed_and_the_slo_holds(healthy: LocalFleet, mode: str,
                                                             figures: Dict[str, Any]) -> None:
    """The make-test form: shed (weight 0 or ejected) within two controller intervals, no failure, then the SLO over
    the requests sent after it was shed. The whole-run attainment (with the transient: the requests sent to it
    before its first slow answer came back) is reported here and asserted by the 30 s soak in benches/test_soak.py."""
    for attempt in (1, 2):
        result = slow_endpoint_run(healthy, mode, run_s=6.0)
        figures.update(result, attempt=attempt)
        assert result["failures_seen"] == 0
        assert result["slow_share_after_shed"] <= 0.05, result
        # timing: shed within two controller intervals (the stall watch does it in 0.53-0.59 s; by the ticks'
        # evidence alone it took ~1.33 s), then >= 99% within the SLO
        missed = []
        if result["time_to_shed_s"] > 2 * INTERVAL_S:
            missed.append(f"shed after {result['time_to_shed_s']:.2f} s > {2 * INTERVAL_S:.2f} s")
        if result["slo_attainment_after_shed"] < 0.99:
            missed.append(f"SLO attainment after shedding {result['slo_attainment_after_shed']:.3f} < 0.99 (misses "
                          f"at {result['misses_after_shed']})")
        if not missed:
            return
        # One run of ~340 requests after shedding allows 3 misses; a single ~0.4 s stall of the 2-core CI machine
        # makes ~20 (seen once in CI, with 0.3% of picks on the slow endpoint). A run that misses a timing floor is
        # measured once more; two in a row fail.
        figures[f"attempt_{attempt}_missed"] = (f"{'; '.join(missed)}; worst stall of the test process "
                                                f"{result['worst_stall_after_shed_s']:.3f} s")
    raise SloMissed(f"twice: {figures}")


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_every_endpoint_down_fails_fast_then_the_same_client_serves(healthy: LocalFleet, mode: str,
                                                                    figures: Dict[str, Any]) -> None:
    protocol = mode.split("-")[1]
    deadline_s = 2.0
    names = healthy.fleet.names
    with Load(mode, client_fleet(healthy, protocol), deadline_s=deadline_s) as load:
        load.wait_requests(64)
        killers = [threading.Thread(target=healthy.kill, args=(n,)) for n in names]
        for t in killers:
            t.start()
        for t in killers:
            t.join()
        down_at = time.monotonic()
        load.wait_requests(len(load.ledger.all()) + 96)
        restarters = [threading.Thread(target=healthy.restart, args=(n,)) for n in names]
        up_started = time.monotonic()
        for t in restarters:
            t.start()
        for t in restarters:
            t.join()
        up_at = time.monotonic()
        # served again: a request that started after every server was ready succeeded
        recover_s = load.wait_for(lambda: any(e.ok for e in load.ledger.between(up_at)), 30.0,
                                  "a request served after the fleet came back")
        load.wait_for(lambda: time.monotonic() - up_at > 4 * INTERVAL_S, 30.0, "settling")
        mark = time.monotonic()
        load.wait_requests(len(load.ledger.all()) + 96)
        ledger = load.stop()
        ledger.check_each_ended_once()
        while_down = [e for e in ledger.between(down_at + 0.2, up_started)]
        down_failures = ledger.failures(while_down)
        wrong = [e for e in down_failures if not is_unavailable(e.error, protocol)]
        slowest_s = max(e.latency_s for e in down_failures)
        after = ledger.between(mark)
        _figures(figures, load, fault="every endpoint SIGKILLed", requests_while_down=len(while_down),
                 failures_while_down=len(down_failures), slowest_failure_s=slowest_s,
                 time_to_serve_again_s=recover_s, failures_after_recovery=len(ledger.failures(after)))
        assert len(down_failures) == len(while_down) > 0, "a request succeeded with every server dead?"
        assert not wrong, f"{len(wrong)} failures not UNAVAILABLE: {wrong[0].error!r}"
        assert slowest_s <= deadline_s + 0.5, f"a failure took {slowest_s:.2f} s (deadline {deadline_s} s)"
        assert not ledger.failures(after), ledger.failures(after)[0].error
        assert_nothing_in_flight(load.client)


def _server_executions(local: LocalFleet) -> int:
    """Requests the servers themselves executed (Triton's own statistics, summed over the fleet)."""
    import tritonclient.http as plain

    total = 0
    for ep in local.endpoints.values():
        client = plain.InferenceServerClient(ep.http_url)
        try:
            stats = client.get_inference_statistics(ep.model_name)["model_stats"]
            total += sum(int(s["inference_stats"]["success"]["count"]) + int(s["inference_stats"]["fail"]["count"])
                         for s in stats)
        finally:
            client.close()
    return total


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_flapping_endpoint_makes_no_retry_storm(healthy: LocalFleet, mode: str, figures: Dict[str, Any]) -> None:
    flapping_run(healthy, mode, FLAP_S, figures)


def flapping_run(healthy: LocalFleet, mode: str, flap_s: float, figures: Dict[str, Any]) -> None:
    """Flap the first endpoint every second for ``flap_s`` under load and check the extra load (shared with the
    soak)."""
    protocol = mode.split("-")[1]
    flappy = healthy.fleet.names[0]
    ep = healthy.endpoints[flappy]
    proxy = FlappingProxy(ep.grpc_url if protocol == "grpc" else ep.http_url)
    try:
        fleet = client_fleet(healthy, protocol, urls={flappy: proxy.url})
        with Load(mode, fleet, deadline_s=5.0, rate_per_caller=4.0) as load:
            load.wait_requests(64)
            budget = BudgetCounter(load.client)
            executed_before = _server_executions(healthy)
            requests_before, picks_before, _ = attempts(load.client)
            started = time.monotonic()
            flips = 0
            while time.monotonic() - started < flap_s:
                time.sleep(max(0.0, started + (flips + 1) * 1.0 - time.monotonic()))
                flips += 1
                # down every other second: alternately refusing (process gone) and losing answers (path broken)
                proxy.set("up" if flips % 2 == 0 else ("refuse" if flips % 4 == 1 else "lossy"))
            proxy.set("up")
            ledger = load.stop()
            duration_s = time.monotonic() - started
            requests, picks, _ = attempts(load.client)
            executed = _server_executions(healthy) - executed_before
        ledger.check_each_ended_once()
        sent = requests - requests_before
        served = sum(1 for e in ledger.between(started) if e.ok)
        extra_on_servers = executed - served
        s = fleet.controller
        # what the budget allows: share x requests, or its minimum per (half-)window, whichever is larger
        windows = math.ceil(duration_s / 5.0) + 1
        allowed = s.retry_budget_share * sent + 10 * windows
        _figures(figures, load, fault=f"{flappy} flapping 1 s up / 1 s down for {flap_s:.0f} s",
                 requests_in_flapping=sent, served=served, retries_charged=budget.granted,
                 retries_refused=budget.refused, attempts_in_flapping=picks - picks_before,
                 extra_server_executions=extra_on_servers, budget_allows=round(allowed),
                 connection_resets=proxy.resets, answers_lost=proxy.answers_dropped)
        assert flips >= flap_s - 1 and proxy.resets > 0, "the endpoint did not flap under load"
        assert budget.granted <= allowed
        assert extra_on_servers <= allowed, (
            f"the servers executed {extra_on_servers} requests beyond the {served} served: a retry storm "
            f"(budget allows {allowed:.0f})")
        failed = ledger.failures()
        assert len(failed) <= 0.01 * sent, f"{len(failed)} of {sent} failed: {failed[0].error!r}"
        assert_nothing_in_flight(load.client)
    finally:
        proxy.close()


def _python_threads() -> Set[threading.Thread]:
    """The threads started through ``threading`` (everything tritonmix starts is one). Left out: ``_DummyThread``
    records, which Python makes when a thread it did not start (a gRPC core thread running a callback) asks for
    ``current_thread()``; on Python 3.11 such a record is never removed, even after that thread has ended."""
    return {t for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}


@pytest.mark.parametrize("mode", SYNC_AND_AIO)
def test_close_under_load_ends_cleanly(healthy: LocalFleet, mode: str, figures: Dict[str, Any]) -> None:
    protocol = mode.split("-")[1]
    ports = {int(ep.http_url.rsplit(":", 1)[1]) for ep in healthy.endpoints.values()}
    ports |= {int(ep.grpc_url.rsplit(":", 1)[1]) for ep in healthy.endpoints.values()}
    threads_before = _python_threads()
    load = Load(mode, client_fleet(healthy, protocol), deadline_s=10.0, rate_per_caller=0.0).start()
    try:
        load.wait_requests(96)
        closed_at = time.monotonic()
        load.close_client()
        close_s = time.monotonic() - closed_at
        load.wait_for(lambda: len(load.ledger.between(closed_at + 0.1)) >= 32, 10.0, "calls after close()")
        ledger = load.stop()
    finally:
        load._stop.set()
    ledger.check_each_ended_once()
    after = ledger.between(closed_at)
    unclean = [e for e in ledger.failures() if not isinstance(e.error, InferenceServerException)]
    in_flight_at_close = [e for e in ledger.all() if e.started_s < closed_at < e.ended_s]
    _figures(figures, load, check_arrivals=False, fault="close() under load", close_s=close_s, in_flight_at_close=len(in_flight_at_close),
             of_which_failed=len(ledger.failures(in_flight_at_close)), calls_after_close=len(after))
    assert in_flight_at_close, "nothing was in flight when close() was called"
    assert not unclean, f"{len(unclean)} requests failed with something else: {unclean[0].error!r}"
    assert not ledger.failures(ledger.between(0.0, closed_at - 1.0)), "failures before close()"
    assert all(not e.ok for e in ledger.between(closed_at + 0.5)), "served after close()"
    assert_nothing_in_flight(load.client)
    # the user lets go of the closed client (grpc.aio's poller thread lives while any channel object does, also
    # with plain tritonclient): drop it, and the tracebacks in the ledger that still reach it through their frames
    load.client = None
    for entry in ledger.all():
        entry.error = None
    del unclean, after, in_flight_at_close
    gc.collect()
    leftover = load.wait_for(lambda: _python_threads() <= threads_before, 10.0,
                             f"threads gone: {sorted(t.name for t in _python_threads() - threads_before)}")
    sockets = open_tcp_connections(ports)
    figures.update(threads_gone_after_s=leftover, sockets_left=len(sockets))
    assert not sockets, f"{len(sockets)} connections to the fleet still open after close(): {sockets[:5]}"
    assert all(ep.running for ep in healthy.endpoints.values())
