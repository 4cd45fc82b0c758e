"""The stall watch (plugin/controller/stall.py) on hand-made dispatcher counters: what trips it and what does not."""
from __future__ import annotations

import math

from tritonmix.controller.stall import StallWatch
from tritonmix.dispatch_core import DispatchStats


def stats(in_flight, done, ewma):
    n = len(in_flight)
    return DispatchStats(tuple(in_flight), tuple(done), tuple(done), tuple([0] * n), tuple(ewma), tuple([0.0] * n))


def test_silence_with_requests_in_flight_past_twice_the_latency_is_a_stall():
    w = StallWatch(2)
    assert w.look(0.0, [stats([4, 4], [10, 10], [0.1, 0.1])]) == []
    # endpoint 0 keeps completing, endpoint 1 goes silent
    assert w.look(0.1, [stats([4, 4], [12, 10], [0.1, 0.1])]) == []
    assert w.look(0.2, [stats([4, 4], [14, 10], [0.1, 0.1])]) == []
    out = w.look(0.21, [stats([4, 4], [15, 10], [0.1, 0.1])])
    assert [i for i, _ in out] == [1]
    assert "stalled" in out[0][1] and out[0][1].startswith("latency outlier")
    # judged once per silence: the next look does not repeat it
    assert w.look(0.25, [stats([4, 4], [16, 10], [0.1, 0.1])]) == []


def test_a_slow_queue_that_keeps_completing_is_not_a_stall():
    w = StallWatch(1)
    done = 0
    for k in range(100):  # one completion every 0.15 s with a latency EWMA of 0.1 s: slower, but answering
        if k % 3 == 0:
            done += 1
        assert w.look(k * 0.05, [stats([10], [done], [0.1])]) == []


def test_nothing_in_flight_or_no_latency_yet_is_never_judged():
    w = StallWatch(2)
    for k in range(50):
        # endpoint 0: idle; endpoint 1: requests in flight but no success ever (EWMA NaN: unknown)
        assert w.look(k * 0.1, [stats([0, 3], [5, 0], [0.01, math.nan])]) == []


def test_counts_add_up_over_dispatchers_and_the_best_latency_sets_the_limit():
    w = StallWatch(1, factor=2.0, slack_s=0.0)
    a, b = stats([1], [3], [0.1]), stats([1], [0], [1.0])
    assert w.look(0.0, [a, b]) == []
    assert w.look(0.19, [a, b]) == []          # limit 2 x 0.1 s (the faster dispatcher's EWMA), not 2 x 1 s
    assert [i for i, _ in w.look(0.21, [a, b])] == [0]
    # a completion seen through the other dispatcher resets the silence
    w2 = StallWatch(1, factor=2.0, slack_s=0.0)
    w2.look(0.0, [a, b])
    assert w2.look(0.15, [a, stats([1], [1], [1.0])]) == []
    assert w2.look(0.3, [a, stats([1], [1], [1.0])]) == []


def test_a_fast_endpoint_gets_the_slack():
    w = StallWatch(1)  # defaults: max(2 x EWMA, EWMA + 0.05 s)
    w.look(0.0, [stats([1], [7], [0.005])])
    assert w.look(0.05, [stats([1], [7], [0.005])]) == []
    assert [i for i, _ in w.look(0.06, [stats([1], [7], [0.005])])] == [0]


def test_an_endpoint_that_still_answers_within_the_slo_is_not_judged_before_it_could_miss():
    w = StallWatch(1, slo_s=0.6)  # EWMA 0.13 s: 2x is 0.26 s, but a request sent now still has 0.47 s
    w.look(0.0, [stats([2], [5], [0.13])])
    assert w.look(0.4, [stats([2], [5], [0.13])]) == []
    assert [i for i, _ in w.look(0.48, [stats([2], [5], [0.13])])] == [0]


def test_the_usual_latency_rises_slowly_after_a_stall():
    """Slow answers that finally come back raise the EWMA; a still-stalled endpoint is judged by what it used to take."""
    w = StallWatch(1, slo_s=0.3)
    w.look(0.0, [stats([2], [10], [0.05])])
    w.look(0.1, [stats([2], [11], [0.5])])  # the EWMA jumps to 0.5 s
    assert w.usual[0] < 0.07  # 0.1 s of a 5 s time constant
    # no answer for 0.26 s > max(2 x usual, SLO - usual = 0.25 s): stalled, though 0.26 s < 2 x the EWMA
    assert [i for i, _ in w.look(0.36, [stats([2], [11], [0.5])])] == [0]


def test_the_usual_latency_is_frozen_while_ejected():
    w = StallWatch(1, slo_s=0.3)
    w.look(0.0, [stats([2], [10], [0.05])])
    for k in range(1, 40):  # 2 s ejected: the stall's slow answers come back, the EWMA is 0.5 s
        w.look(k * 0.05, [stats([1], [10 + k], [0.5])], frozen={0})
    assert w.usual[0] == 0.05
    w.look(2.0, [stats([0], [50], [0.5])])  # readmitted: nothing in flight
    assert [i for i, _ in w.look(2.3, [stats([1], [50], [0.5])])] == [0]  # a trial request unanswered for 0.3 s


def test_usual_latency_falls_at_once_and_rises_slowly():
    from tritonmix.request.baseline import UsualLatency

    u = UsualLatency(2, tau_s=5.0)
    assert u.update(0.0, [0.1, float("nan")])[0] == 0.1 and u.values[1] != u.values[1]
    assert u.update(0.1, [0.05, float("inf")])[0] == 0.05  # a fall is taken at once; inf is no observation
    risen = u.update(1.1, [1.05, 0.2])
    assert 0.05 < risen[0] < 0.05 + 0.2 * 1.0 and risen[1] == 0.2  # 1 s of a 5 s time constant: ~18% of the rise
    assert u.update(2.1, [5.0, 0.3], frozen={0, 1})[0] == risen[0]  # frozen: kept


def test_attempts_we_cancelled_are_no_answer():
    """A hedge's cancelled loser is recorded as a success (its pick is matched) but counted apart: an endpoint whose
    only completions are cancelled attempts is silent; a real answer beside them still resets the silence."""
    w = StallWatch(1, factor=2.0, slack_s=0.0)
    assert w.look(0.0, [stats([2], [10], [0.1])], abandoned=[0]) == []
    # every 0.1 s one attempt is cancelled and recorded as a success: the dispatcher's count moves, the answers do not
    assert w.look(0.1, [stats([2], [11], [0.1])], abandoned=[1]) == []
    assert w.look(0.19, [stats([2], [12], [0.1])], abandoned=[2]) == []
    assert [i for i, _ in w.look(0.21, [stats([2], [13], [0.1])], abandoned=[3])] == [0]
    w2 = StallWatch(1, factor=2.0, slack_s=0.0)
    w2.look(0.0, [stats([2], [10], [0.1])], abandoned=[0])
    assert w2.look(0.15, [stats([2], [12], [0.1])], abandoned=[1]) == []  # one cancelled, one answered
    assert w2.look(0.3, [stats([2], [12], [0.1])], abandoned=[1]) == []
    assert [i for i, _ in w2.look(0.36, [stats([2], [12], [0.1])], abandoned=[1])] == [0]


def test_the_router_counts_a_cancelled_attempt_with_its_record():
    from tritonmix.fleet import Fleet
    from tritonmix.request.router import Router

    router = Router(Fleet.from_urls("127.0.0.1:1,127.0.0.1:2", protocol="http", slo_ms=600,
                                    controller={"enabled": False}), seed=1)
    lane = router.lane("m", "interactive")
    lane.begin()
    i = lane.pick()
    router.record_abandoned(lane.dispatcher, i, 0.2)
    stats_now, abandoned = router.stall_view()
    assert stats_now[0].in_flight[i] == 0 and stats_now[0].successes[i] == 1
    assert abandoned[i] == 1 and abandoned[1 - i] == 0


def test_attempts_cancelled_unanswered_keep_the_silence_going_while_nothing_is_in_flight():
    """Every request on the endpoint is won by its hedge, its attempt here cancelled once overdue: in flight is
    often 0 at a look, but those requests were never answered by it, so the silence is not reset."""
    w = StallWatch(1, factor=2.0, slack_s=0.0)
    assert w.look(0.0, [stats([0], [10], [0.1])], abandoned=[0]) == []
    assert w.look(0.05, [stats([1], [10], [0.1])], abandoned=[0]) == []  # sent
    assert w.look(0.1, [stats([1], [10], [0.1])], abandoned=[0]) == []
    assert w.look(0.16, [stats([0], [11], [0.1])], abandoned=[1]) == []  # cancelled, overdue: 0 in flight
    assert w.look(0.19, [stats([1], [12], [0.1])], abandoned=[2]) == []
    out = w.look(0.21, [stats([0], [13], [0.1])], abandoned=[3])
    assert [i for i, _ in out] == [0] and "cancelled unanswered" in out[0][1]
    # an answer ends it: the cancelled ones before it are no longer waiting
    w.look(0.3, [stats([0], [15], [0.1])], abandoned=[3])
    for k in range(1, 10):
        assert w.look(0.3 + k * 0.1, [stats([0], [15], [0.1])], abandoned=[3]) == []  # idle: never judged


def test_copies_cancelled_before_the_endpoint_owed_an_answer_do_not_make_an_idle_endpoint_silent():
    """A hedge's copy sent to an idle endpoint and cancelled when the original answered elsewhere (over gRPC the
    server stops it and never answers) was owed nothing: the endpoint is not judged silent for it, however long it
    then stays idle. One cancelled after it was due still counts."""
    w = StallWatch(1, factor=2.0, slack_s=0.0)  # usual 0.1 s, limit 0.2 s
    assert w.look(0.0, [stats([0], [10], [0.1])], abandoned=[0]) == []
    t = 0.0
    for k in range(1, 6):  # a copy every 0.3 s (the looks every 0.05 s), out 0.05 s each
        for _ in range(5):
            t += 0.05
            assert w.look(t, [stats([0], [10 + k - 1], [0.1])], abandoned=[k - 1]) == []
        t += 0.05
        assert w.look(t, [stats([1], [10 + k - 1], [0.1])], abandoned=[k - 1]) == []
        assert w.look(t + 0.05, [stats([0], [10 + k], [0.1])], abandoned=[k]) == []
    for k in range(1, 40):
        assert w.look(t + 0.05 + 0.05 * k, [stats([0], [15], [0.1])], abandoned=[5]) == []
    t += 2.0
    assert w.look(t, [stats([0], [15], [0.1])], abandoned=[5]) == []
    assert w.look(t + 0.05, [stats([1], [15], [0.1])], abandoned=[5]) == []
    assert w.look(t + 0.17, [stats([0], [16], [0.1])], abandoned=[6]) == []  # out 0.12-0.17 s: overdue
    out = w.look(t + 0.25, [stats([0], [16], [0.1])], abandoned=[6])
    assert [i for i, _ in out] == [0] and "1 cancelled unanswered" in out[0][1]
