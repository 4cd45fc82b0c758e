"""Hedged requests ("The Tail at Scale"; gRPC's hedging policy; Envoy's hedge_on_per_try_timeout): an interactive
request still outstanding after its endpoint's hedge delay gets one copy on another endpoint; the first success
wins and the other attempt is discarded. Opt-in per fleet: ``controller: {hedge: {...}}`` (``HedgeSettings``).

    arrive -> pick i -> start(i)                        (through the dispatcher: every pick matched by one record)
    wait until the first completion or t0 + delay_i
        delay passed, hedges left, a retry-budget token  pick j not in {i} | tried | slow, start(j)   (the hedge)
        success                                          record it, return it; every other attempt is abandoned
        REQUEST error (400 ...)                          record it, raise it unchanged (others abandoned)
        no-response failure, another attempt in flight   record it, keep waiting for the other
        no-response failure, nothing else in flight      the failover rules of ``tritonmix.request.engine``
        deadline passed                                  "deadline passed" (others abandoned)

    delay = max(min_delay_s, min(delay_factor x expected, cap_i))      expected <= cap_i, or no queue ahead
            max(min_delay_s, min(delay_factor x expected, SLO))        a queue ahead that leaves no time for a copy
    expected = usual_i x (1 + ahead // C_i)      ahead: our requests on i before this one when it was sent; C_i:
                                                 i's max_concurrency (unknown: ahead is not counted)
    cap_i    = SLO - HEDGE_ROOM x min_{j != i, available} usual_j

slow: the endpoints whose usual latency, HEDGE_FIT times over, no longer fits in what is left of the SLO
(the SLO less the time since the first attempt was sent): a copy there would answer late even on a good day. The
pick by the plan's weights alone (cheapest first in COST mode, overflowing past the in-flight limits) would send it
to a slow tier that answers after the SLO anyway. Where every endpoint left is slow (a request past the cap, or a
fleet of slow ones), the pick is as before: the copy still bounds the tail. At the cap the fastest other endpoint
always fits (HEDGE_ROOM >= HEDGE_FIT).

A request queued behind k rounds of ours (C_i at a time) is expected after k + 1 service times: it is late, and
gets its copy, only past that, not past one service time; this keeps the hedge budget (below) for requests that
are late because something went wrong (a cut, a freeze, a slow-down), not spent on a queue that is draining as
it should. A request expected past cap_i (the last moment a copy elsewhere can still meet the SLO) gets no copy
that could only be late: its copy leaves at the SLO, to bound its tail.

usual_i is endpoint i's usual latency: the dispatcher's EWMA latency (its max_concurrency / max_rps hint before the
first success; half the SLO when neither is known) followed at once when it falls and with a time constant of
USUAL_TAU_S when it rises, so that an endpoint that slows down does not push its own hedges later (its slow
answers would raise a plain EWMA before the requests stuck behind them are hedged). The cap sends the hedge while
another endpoint can still answer within the SLO with room to spare (HEDGE_ROOM of its usual latency: its own queue
and jitter). Recomputed at most every REFRESH_S per dispatcher:
O(n) then, O(1) per request.

Abandoned attempts (losers) are cancelled where the transport can (an aio task, a gRPC CallContext) and otherwise
complete and are recorded then (the sync HTTP client cannot cancel a request in flight). Each loser is recorded
exactly once, when it ends: a success as a success (the server served it), a failure as a failure, and an attempt
that ended because we cancelled it as a completion with latency max(elapsed, the endpoint's EWMA): it did not fail,
it was slower, and counting it as a failure would let hedging eject slow but healthy endpoints. It is not an answer
either: the router counts it apart (``Router.record_abandoned``), so that the controller's stall watch still sees a
frozen endpoint whose every request is won by its hedge as silent (else each cancelled loser would reset its silence
and the endpoint would never be ejected).

Each attempt, the hedge included, is bounded by its endpoint's rescue limit (``tritonmix.request.rescue``): an
attempt with no answer by then is STALLED, so that a hedged request on a frozen fleet ends too.

Budget: each hedge takes one token of the hedge budget (``max_share`` of the hedgeable requests over the last 10 s,
at least 2) and one of the client's retry budget (``RetryBudget.try_acquire``): hedges and retries together add at
most ``retry_budget_share`` extra requests. ``batch`` requests and requests of a sequence are
never hedged (a sequence's state must live on one server); neither is gRPC's callback ``async_infer``.
Where: sync HTTP (``SyncHedger``: blocking attempts on a thread pool), sync gRPC (``Engine.run_hedged`` over
tritonclient's async_infer, cancellable), and the aio clients (``run_hedged_async``).
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from ..dispatch_core import NoEndpointAvailable
from ..errors import PoolShutDown
from .attempts import Attempts, transport_cancelled
from .baseline import USUAL_TAU_S, UsualLatency
from .retry import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

__all__ = ["HedgeDelay", "HedgedCall", "SyncHedger", "run_hedged_async", "REFRESH_S"]

#: how long a dispatcher's hedge delays are reused before they are computed again from its stats
REFRESH_S = 0.05
#: the hedge leaves this many usual latencies of the best other endpoint before the SLO
HEDGE_ROOM = 1.5
#: a hedge goes only where this many usual latencies fit in what is left of the SLO (its queue and jitter)
HEDGE_FIT = 1.25

Done = Callable[[Any, Optional[BaseException]], None]
#: start(i, remaining_s, done) starts one attempt; done(result, error) is called once when it ends (any thread);
#: returns a cancel callable (None: cannot be cancelled; a cancel that returns False did not cancel)
Start = Callable[[int, Optional[float], Done], Optional[Callable[[], Any]]]


class HedgeDelay:
    """``delay(d, i)``: the hedge delay of a request on endpoint i of dispatcher d (module docstring's rule)."""

    def __init__(self, fleet: Any, settings: Any, clock: Callable[[], float]) -> None:
        self.factor = settings.delay_factor
        self.floor_s = settings.min_delay_s
        self.slo_s = fleet.slo_s
        self.clock = clock
        self._hints = [e.max_concurrency / e.max_rps if e.max_concurrency and e.max_rps else math.nan
                       for e in fleet.endpoints]
        #: per endpoint: requests it serves at once (0: unknown, the queue ahead is not counted)
        self._slots = [int(e.max_concurrency or 0) for e in fleet.endpoints]
        #: per dispatcher: when its entries expire, and per endpoint (expected latency with no queue, cap_i)
        self._cache: Dict[int, Tuple[float, Tuple[Tuple[float, float], ...]]] = {}
        #: per dispatcher: the usual latency per endpoint
        self._usual: Dict[int, UsualLatency] = {}

    def __call__(self, d: Any, i: int, ahead: int = 0) -> float:
        """The delay of a request sent to endpoint i with ``ahead`` of our requests already on it."""
        now = self.clock()
        entry = self._cache.get(id(d))
        if entry is None or now >= entry[0]:
            entry = (now + REFRESH_S, self.compute(d))
            self._cache[id(d)] = entry
        expected, cap = entry[1][i]
        slots = self._slots[i] if i < len(self._slots) else 0
        rounds = ahead // slots if slots > 0 and ahead > 0 else 0
        if rounds:
            expected *= 1 + rounds
        if rounds == 0 or expected <= cap:
            return max(self.floor_s, min(self.factor * expected, cap))
        return max(self.floor_s, min(self.factor * expected, self.slo_s))

    def expected_s(self, d: Any) -> List[float]:
        """The dispatcher's EWMA latency per endpoint, the hint where it has none yet (none for an endpoint that
        joined later: ``tritonmix.request.slots``)."""
        ewma = d.stats().ewma_latency_s
        hints = self._hints + [math.nan] * (len(ewma) - len(self._hints))
        return [e if e == e else h for e, h in zip(ewma, hints)]

    def usual_s(self, d: Any) -> List[float]:
        """usual_i (module docstring, ``tritonmix.request.baseline``) of dispatcher d's endpoints."""
        usual = self._usual.get(id(d))
        if usual is None:
            usual = self._usual[id(d)] = UsualLatency(len(self._hints), USUAL_TAU_S)
        expected = self.expected_s(d)
        usual.values += [math.nan] * (len(expected) - len(usual.values))  # slots that joined since
        return list(usual.update(self.clock(), expected))

    def too_slow(self, d: Any, left_s: float) -> FrozenSet[int]:
        """Dispatcher d's endpoints whose usual latency x HEDGE_FIT exceeds ``left_s`` (from the delays computed for
        its requests' starts, at most REFRESH_S old then; none before the first)."""
        entry = self._cache.get(id(d))
        if entry is None or left_s == math.inf:
            return frozenset()
        return frozenset([j for j, (expected, _) in enumerate(entry[1]) if HEDGE_FIT * expected > left_s])

    def compute(self, d: Any) -> Tuple[Tuple[float, float], ...]:
        """Per endpoint: (its expected latency with no queue ahead, cap_i) of the module docstring; an endpoint with
        no usual latency yet is expected at SLO / (2 x delay_factor), so that its delay is half the SLO."""
        usual = self.usual_s(d)
        usable = [x if x == x and d.is_available(j) else math.inf for j, x in enumerate(usual)]
        best = sorted(range(len(usable)), key=usable.__getitem__)[:2]
        out = []
        for i, x in enumerate(usual):
            expected = x if x == x else 0.5 * self.slo_s / self.factor
            other = [usable[j] for j in best if j != i]
            cap = self.slo_s - HEDGE_ROOM * other[0] if other and other[0] < math.inf else math.inf
            out.append((expected, cap))
        return tuple(out)


class _Flight:
    """One attempt in flight: endpoint, start time, its rescue limit (``rescue``), how to cancel it, whether we
    did."""

    __slots__ = ("i", "t0", "rescue_s", "cancel", "cancelled")

    def __init__(self, i: int, t0: float, rescue_s: float = math.inf) -> None:
        self.i = i
        self.t0 = t0
        self.rescue_s = rescue_s
        self.cancel: Optional[Callable[[], Any]] = None
        self.cancelled = False


def record_loser(att: Attempts, flight: _Flight, error: Optional[BaseException]) -> None:
    """Record an abandoned attempt as it ends (module docstring): once, never raising."""
    if error is None:
        att.succeeded(flight.i, flight.t0)
        return
    engine, lane = att.engine, att.lane
    if flight.cancelled:
        elapsed_s = max(0.0, engine.clock() - flight.t0)
        ewma = lane.dispatcher.stats().ewma_latency_s[flight.i]
        engine.router.record_abandoned(lane.dispatcher, flight.i, max(elapsed_s, ewma) if ewma == ewma else elapsed_s)
        return
    outcome = None
    if isinstance(error, Exception):
        outcome = Outcome.MAYBE_RAN if engine.closed else engine.classify(error)
    lane.failed(flight.i, flight.t0, outcome)


def _cancel(flight: _Flight) -> None:
    """Cancel where the transport can. ``cancelled`` is set first: a transport may call ``done`` from inside
    ``cancel()`` (a queued pool future does), and that ending must be recorded as our cancellation."""
    cancel = flight.cancel
    if cancel is None:
        return
    flight.cancelled = True
    try:
        if cancel() is False:
            flight.cancelled = False  # already running or done: it ends by itself and is recorded as it ends
    except Exception:  # noqa: BLE001 - a failed cancel leaves the attempt to end by itself
        flight.cancelled = False


class _Plan:
    """What the hedged loops share: the next hedge's time, the deadline, the hedge pick."""

    def __init__(self, att: Attempts, delay: HedgeDelay, max_hedges: int) -> None:
        self.att = att
        self.delay = delay
        self.hedges = max_hedges
        if max_hedges > 0:
            att.engine.hedge_budget.record_request()
        self.hedge_at = math.inf
        self.first_at = math.inf  # the first attempt's start: what is left of the SLO counts from it

    def started(self, i: int, t0: float) -> None:
        self.first_at = min(self.first_at, t0)
        if self.hedges <= 0:
            self.hedge_at = math.inf
            return
        d = self.att.lane.dispatcher
        self.hedge_at = t0 + self.delay(d, i, max(0, d.in_flight(i) - 1))  # ahead: ours there before this one

    def timeout_s(self, now: float, live: int) -> Optional[float]:
        at = self.hedge_at if self.hedges > 0 and live else math.inf
        if self.att.deadline_at is not None:
            at = min(at, self.att.deadline_at)
        return None if at == math.inf else max(0.0, at - now)

    def due(self, now: float, live: Sequence[int]) -> Optional[int]:
        """The wait ended with nothing done: raise past the deadline, else pick the hedge (None: no hedge now)."""
        att = self.att
        if att.deadline_at is not None and now >= att.deadline_at:
            raise att.engine.exhausted(att.model, att.policy, "deadline passed")
        if self.hedges <= 0 or now < self.hedge_at:
            return None
        self.hedges -= 1
        self.hedge_at = math.inf
        if not att.engine.hedge_budget.try_acquire() or not att.engine.router.budget.try_acquire():
            self.hedges = 0
            return None
        tried = att.policy.tried() | frozenset(live)
        slow = self.delay.too_slow(att.lane.dispatcher, self.delay.slo_s - (now - self.first_at))
        try:
            if slow - tried:
                try:
                    return att.lane.pick(tried | slow)  # where a copy can still answer within the SLO
                except NoEndpointAvailable:
                    pass  # every endpoint left is slow: a copy still bounds the tail
            return att.lane.pick(tried)
        except NoEndpointAvailable:
            return None


class HedgedCall:
    """One hedged request of a sync client, over callback-driven attempts (``Start``); ``run()`` blocks until the
    first success, the request's end, or the deadline."""

    def __init__(self, engine: "Engine", att: Attempts, start: Start) -> None:
        self.e = engine
        self.att = att
        self.start = start
        self.plan = _Plan(att, engine.hedge_delay, engine.hedge.max_hedges if att.request_class == "interactive" else 0)
        self._q: "queue.SimpleQueue[Tuple[_Flight, Any, Optional[BaseException]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished = False
        self._live: Dict[int, _Flight] = {}

    def run(self) -> Any:
        att, plan = self.att, self.plan
        try:
            remaining_s = att.remaining_s(self.e.clock())
            self._launch(att.pick(), remaining_s)
            while True:
                try:
                    flight, result, error = self._q.get(timeout=plan.timeout_s(self.e.clock(), len(self._live)))
                except queue.Empty:
                    now = self.e.clock()
                    j = plan.due(now, tuple(self._live))
                    if j is not None:
                        self._launch(j, att.remaining_s(now) if att.deadline_at is not None else None)
                    continue
                del self._live[flight.i]
                if error is None:
                    att.succeeded(flight.i, flight.t0)
                    return result
                if self._live:
                    att.noted(flight.i, flight.t0, error, flight.rescue_s)  # raises what ends the request
                    continue
                att.failed(flight.i, flight.t0, error, flight.rescue_s)  # raises, or returns to fail over
                remaining_s = att.remaining_s(self.e.clock())
                self._launch(att.pick(), remaining_s)
        finally:
            self._finish()

    def _launch(self, i: int, remaining_s: Optional[float]) -> None:
        t0 = self.e.clock()
        limit_s, rescue_s = self.att.limit(i, t0, remaining_s)
        flight = _Flight(i, t0, rescue_s)
        self._live[i] = flight
        self.plan.started(i, flight.t0)
        try:
            flight.cancel = self.start(i, limit_s, functools.partial(self._done, flight))
        except Exception as exc:  # noqa: BLE001 - an attempt that failed to start is a failed attempt
            self._done(flight, None, exc)

    def _done(self, flight: _Flight, result: Any, error: Optional[BaseException]) -> None:
        with self._lock:
            if not self._finished:
                self._q.put((flight, result, error))
                return
        record_loser(self.att, flight, error)

    def _finish(self) -> None:
        with self._lock:
            self._finished = True
        for flight in self._live.values():
            _cancel(flight)
        while True:
            try:
                flight, _, error = self._q.get_nowait()
            except queue.Empty:
                return
            record_loser(self.att, flight, error)


class SyncHedger:
    """The sync clients' hedged path: attempts (blocking ``send(i, remaining_s)``) run on a pool of threads owned
    by the client, made as needed up to ``max_threads``; the caller waits for the first to finish. ``close()``
    shuts the pool down: queued attempts end with PoolShutDown, running ones finish and are recorded."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=engine.hedge.max_threads, thread_name_prefix="tritonmix-hedge")

    @classmethod
    def for_engine(cls, engine: "Engine") -> Optional["SyncHedger"]:
        """A hedger when the engine's fleet enables hedging, else None (the client keeps its fast path)."""
        return cls(engine) if engine.hedge_delay is not None else None

    def run(self, model: str, request_class: str, deadline_s: Optional[float],
            send: Callable[[int, Optional[float]], Any]) -> Any:
        """``Engine.run`` with hedging, for a blocking ``send``."""
        return self.run_started(model, request_class, deadline_s, functools.partial(self._start, send))

    def run_started(self, model: str, request_class: str, deadline_s: Optional[float], start: Start) -> Any:
        """``Engine.run`` with hedging, for a callback-driven ``start`` (gRPC's async_infer, cancellable)."""
        return self.engine.run_hedged(model, request_class, deadline_s, start)

    def _start(self, send: Callable[[int, Optional[float]], Any], i: int, remaining_s: Optional[float],
               done: Done) -> Callable[[], bool]:
        def attempt() -> None:
            try:
                result = send(i, remaining_s)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                done(None, exc)
                return
            done(result, None)

        # in a copy of the caller's context: what the caller set in context variables (a trace span, a request id)
        # is what its attempts see, on whichever thread of the pool they run
        future = self._pool.submit(contextvars.copy_context().run, attempt)
        future.add_done_callback(lambda f: done(None, PoolShutDown("the attempt never ran")) if f.cancelled() else None)
        return future.cancel

    def close(self) -> None:
        self.engine.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


async def run_hedged_async(engine: "Engine", att: Attempts,
                           send: Callable[[int, Optional[float]], Awaitable[Any]]) -> Any:
    """``HedgedCall.run`` for coroutines: each attempt is a task; asyncio.wait(FIRST_COMPLETED); losers are
    cancelled (and recorded when they end). A cancellation of the caller cancels and records every attempt."""
    plan = _Plan(att, engine.hedge_delay, engine.hedge.max_hedges if att.request_class == "interactive" else 0)
    live: Dict["asyncio.Future[Any]", _Flight] = {}

    def launch(i: int, remaining_s: Optional[float]) -> None:
        t0 = engine.clock()
        limit_s, rescue_s = att.limit(i, t0, remaining_s)
        flight = _Flight(i, t0, rescue_s)
        plan.started(i, flight.t0)
        try:
            task = asyncio.ensure_future(send(i, limit_s))
        except Exception as exc:  # noqa: BLE001 - failed to start: a failed attempt
            task = asyncio.get_running_loop().create_future()
            task.set_exception(exc)
        flight.cancel = task.cancel
        live[task] = flight

    try:
        launch(att.pick(), att.remaining_s(engine.clock()))
        while True:
            done, _ = await asyncio.wait(list(live), timeout=plan.timeout_s(engine.clock(), len(live)),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                now = engine.clock()
                j = plan.due(now, [f.i for f in live.values()])
                if j is not None:
                    launch(j, att.remaining_s(now) if att.deadline_at is not None else None)
                continue
            for task in sorted(done, key=lambda t: t.cancelled() or t.exception() is not None):
                flight = live.pop(task)
                error = transport_cancelled(asyncio.CancelledError()) if task.cancelled() else task.exception()
                if error is None:
                    att.succeeded(flight.i, flight.t0)
                    return task.result()
                if live:
                    att.noted(flight.i, flight.t0, error, flight.rescue_s)
                    continue
                att.failed(flight.i, flight.t0, error, flight.rescue_s)
                launch(att.pick(), att.remaining_s(engine.clock()))
    finally:
        for task, flight in live.items():
            flight.cancelled = not task.done()
            task.add_done_callback(functools.partial(_record_task, att, flight))
            task.cancel()


def _record_task(att: Attempts, flight: _Flight, task: "asyncio.Future[Any]") -> None:
    if task.cancelled():
        flight.cancelled = True
        record_loser(att, flight, asyncio.CancelledError())
        return
    error = task.exception()
    record_loser(att, flight, error)
