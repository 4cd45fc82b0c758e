"""The Board: every client's reports merged into one router-shaped view, so that the plane's Controller (Observer,
Health, Decider: the same code a client runs in-process) reads the whole fleet's traffic as one client's.

Per client it keeps the last report; a new report adds its differences to the fleet-wide totals:

    counters (arrivals, successes, failures per key; ok, over_slo, failed per endpoint):
        total += new - last        (a counter that went down, a restarted client, counts from 0)
        a client's first report is its baseline: it adds nothing (a client that ran before it connected does not
        land its whole history in one tick)
    gauges (in flight per key and endpoint): the sum over live clients of their latest figure
    latency per key and endpoint: the success-weighted mean over live clients of their EWMA latency
        (weights: the client's successes there, as ``per_model.model_stats`` weighs dispatchers)
    demand share of client c for model m: r_c,m / sum over live clients of r_m, with r_c,m the client's
        interactive arrivals per second between its last two reports (equal shares while nobody has demand)

A client's gauges leave the sums once its last report is older than ``gauge_expire_s`` (1.5 intervals: a client
that died must not look like requests stuck at an endpoint; its next report brings them back), and a client silent
for ``expire_s`` is dropped (its counters stay in the totals), as is one that says goodbye (``ingest(final=True)``,
its last report as it closes). An
endpoint that enters a client's passive-ejection set is handed to the ejector (the plane's Health), once per
client and episode. Cost: O(keys x n) per report with numpy, O(keys x n) per read of the merged view.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..dispatch_core import DispatchStats
from .report import KeyReport, Report

__all__ = ["Board", "ClientRow"]

Key = Tuple[str, str]


@dataclasses.dataclass(frozen=True)
class ClientRow:
    """One live client, as ``tritonmix status`` shows it."""

    client: str
    seen_s_ago: float
    reports: int
    interactive_rps: float
    plan_age_s: float
    in_flight: int
    ejected: Tuple[str, ...]


class _Total:
    """One (model, request class) over the fleet: merged counters and gauges."""

    __slots__ = ("arrivals", "successes", "failures", "in_flight", "lat_num", "lat_den")

    def __init__(self, n: int) -> None:
        self.arrivals = 0
        self.successes = np.zeros(n, np.int64)
        self.failures = np.zeros(n, np.int64)
        self.in_flight = np.zeros(n, np.int64)
        self.lat_num = np.zeros(n)
        self.lat_den = np.zeros(n)


class _Client:
    __slots__ = ("last", "seen_at", "reports", "rates", "rate_at", "gauges")

    def __init__(self, report: Report, now: float) -> None:
        self.gauges = True       # its last report's gauges are in the sums
        self.last = report
        self.seen_at = now
        self.reports = 1
        self.rates: Dict[str, float] = {}
        self.rate_at = now


def _grown(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Per element: new - old, or new where the counter went down (a restart)."""
    return np.where(new >= old, new - old, new)


def _latency_terms(k: KeyReport) -> Tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(k.latency_s) & (k.successes > 0)
    w = np.where(known, k.successes, 0).astype(float)
    return np.where(known, k.latency_s, 0.0) * w, w


class Board:
    """Merged reports, with the router contract the Controller reads (``tritonmix.request.router``); the
    plane applies nothing to it (clients apply the plans), so the setters only remember."""

    def __init__(self, names: Sequence[str], *, expire_s: float, gauge_expire_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._names = tuple(names)
        self.n = len(self._names)
        self.expire_s = expire_s
        self.gauge_expire_s = expire_s / 2 if gauge_expire_s is None else gauge_expire_s
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: Dict[str, _Client] = {}
        self._totals: Dict[Key, _Total] = {}
        self._ep = np.zeros((3, self.n), np.int64)     # ok, over_slo, failed: fleet-wide cumulative
        self._ejector: Optional[Callable[[int, str, float], None]] = None
        self._listeners: List[Callable[[Key], None]] = []
        self.available = [True] * self.n
        #: reports taken and clients dropped for silence, since the start
        self.reports = 0
        self.expired = 0
        self._view: Optional[Dict[Key, "_Stats"]] = None

    # ---- reports -----------------------------------------------------------------------------------------------
    def ingest(self, report: Report, final: bool = False) -> None:
        """Merge one parsed report (module docstring); hands new passive ejections to the ejector. ``final``: the
        client's last report (it closes): merged, then the client leaves."""
        now = self._clock()
        new_keys: List[Key] = []
        with self._lock:
            self.reports += 1
            client = self._clients.get(report.client)
            if client is None:
                self._clients[report.client] = _Client(report, now)
                fresh = set(report.ejected)
                for k in report.keys:
                    new_keys += self._add_gauges(k, 1)
            else:
                last = client.last
                fresh = set(report.ejected) - set(last.ejected)
                new_keys = self._merge(client, last, report, now)
            if final:
                self._drop(report.client)
            self._view = None
        for key in new_keys:
            for callback in self._listeners:
                callback(key)
        ejector = self._ejector
        if ejector is not None:
            for i in sorted(fresh):
                ejector(i, f"connection failures (seen by client {report.client})", now)

    def _merge(self, client: _Client, last: Report, report: Report, now: float) -> List[Key]:
        self._ep += np.stack([_grown(report.ok, last.ok), _grown(report.over_slo, last.over_slo),
                              _grown(report.failed, last.failed)])
        before = {(k.model, k.request_class): k for k in last.keys}
        dt = max(now - client.rate_at, 1e-3)
        arrivals: Dict[str, int] = {}
        created: List[Key] = []
        for k in report.keys:
            key = (k.model, k.request_class)
            old = before.pop(key, None)
            if old is None:
                created += self._add_gauges(k, 1)
                continue
            total = self._totals[key]
            grew = k.arrivals - old.arrivals if k.arrivals >= old.arrivals else k.arrivals
            total.arrivals += grew
            total.successes += _grown(k.successes, old.successes)
            total.failures += _grown(k.failures, old.failures)
            if client.gauges:
                self._swap_gauges(total, old, k)
            else:
                self._add_gauges(k, 1)
            if k.request_class == "interactive":
                arrivals[k.model] = arrivals.get(k.model, 0) + grew
        for old in before.values():  # a dispatcher the client no longer reports: its gauges leave
            if client.gauges:
                self._swap_gauges(self._totals[(old.model, old.request_class)], old, None)
        client.gauges = True
        client.rates = {m: a / dt for m, a in arrivals.items()}
        client.rate_at = now
        client.last, client.seen_at = report, now
        client.reports += 1
        return created

    def _add_gauges(self, k: KeyReport, sign: int) -> List[Key]:
        key = (k.model, k.request_class)
        total = self._totals.get(key)
        created = []
        if total is None:
            total = self._totals[key] = _Total(self.n)
            created.append(key)
        num, den = _latency_terms(k)
        total.in_flight += sign * k.in_flight
        total.lat_num += sign * num
        total.lat_den += sign * den
        return created

    def _swap_gauges(self, total: _Total, old: KeyReport, new: Optional[KeyReport]) -> None:
        num, den = _latency_terms(old)
        total.in_flight -= old.in_flight
        total.lat_num -= num
        total.lat_den -= den
        if new is not None:
            num, den = _latency_terms(new)
            total.in_flight += new.in_flight
            total.lat_num += num
            total.lat_den += den

    def expire(self) -> List[str]:
        """Drop the clients silent for ``expire_s``; returns their ids."""
        now = self._clock()
        gone = []
        with self._lock:
            for cid, client in list(self._clients.items()):
                if now - client.seen_at > self.expire_s:
                    self._drop(cid)
                    gone.append(cid)
            if gone:
                self.expired += len(gone)
                self._view = None
        return gone

    def _drop(self, cid: str) -> None:
        self._clear_gauges(self._clients.pop(cid))

    def _clear_gauges(self, client: _Client) -> None:
        if client.gauges:
            for k in client.last.keys:
                self._swap_gauges(self._totals[(k.model, k.request_class)], k, None)
            client.gauges = False

    def _stale_gauges(self) -> None:
        """Take the gauges of clients silent for ``gauge_expire_s`` out of the sums (lock held)."""
        now = self._clock()
        for client in self._clients.values():
            if client.gauges and now - client.seen_at > self.gauge_expire_s:
                self._clear_gauges(client)
                self._view = None

    def base_of(self, client: str, seq: int) -> Optional[Report]:
        """The client's last report when it is report ``seq`` (what a sparse report is read against), else None."""
        with self._lock:
            c = self._clients.get(client)
            return c.last if c is not None and c.last.seq == seq else None

    # ---- what the plane reads ------------------------------------------------------------------------------------
    def share(self, client: str) -> Dict[str, float]:
        """The client's share of each model's interactive demand (module docstring); {} for an unknown client."""
        with self._lock:
            me = self._clients.get(client)
            if me is None:
                return {}
            totals: Dict[str, float] = {}
            for c in self._clients.values():
                for m, r in c.rates.items():
                    totals[m] = totals.get(m, 0.0) + r
            live = len(self._clients)
            return {m: (me.rates.get(m, 0.0) / t if t > 0 else 1.0 / live) for m, t in totals.items()}

    def clients(self) -> List[ClientRow]:
        now = self._clock()
        with self._lock:
            return [ClientRow(cid, now - c.seen_at, c.reports, sum(c.rates.values()), c.last.plan_age_s,
                              int(sum(int(k.in_flight.sum()) for k in c.last.keys)),
                              tuple(self._names[i] for i in c.last.ejected))
                    for cid, c in sorted(self._clients.items())]

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # ---- the router contract (what the Controller reads) ------------------------------------------------------
    def endpoint_names(self) -> Tuple[str, ...]:
        return self._names

    def dispatchers(self) -> Dict[Key, "_Stats"]:
        with self._lock:
            self._stale_gauges()
            if self._view is None:
                self._view = {key: _Stats(_stats(t, self.n)) for key, t in self._totals.items()}
            return dict(self._view)

    def endpoint_counters(self) -> List[Tuple[int, int, int]]:
        with self._lock:
            return list(zip(*(row.tolist() for row in self._ep)))

    def arrivals(self) -> Dict[Key, int]:
        with self._lock:
            return {key: t.arrivals for key, t in self._totals.items()}

    def ejected_by_router(self) -> List[bool]:
        return [False] * self.n

    def set_ejector(self, ejector: Optional[Callable[[int, str, float], None]]) -> None:
        self._ejector = ejector

    def add_listener(self, callback: Callable[[Key], None]) -> None:
        self._listeners.append(callback)

    def set_endpoint_available(self, index: int, available: bool) -> None:
        self.available[index] = bool(available)

    def set_weights(self, model: str, request_class: str, weights: Sequence[float]) -> None:
        """Nothing to apply here: clients apply the plan."""

    def set_limits(self, model: str, request_class: str, limits: Sequence[int]) -> None:
        """Nothing to apply here: clients apply the plan."""

    def set_default_weights(self, weights: Sequence[float]) -> None:
        """Nothing to apply here: clients apply the plan."""


class _Stats:
    """A merged dispatcher as the Controller reads one (``stats()``)."""

    __slots__ = ("_s",)

    def __init__(self, s: DispatchStats) -> None:
        self._s = s

    def stats(self) -> DispatchStats:
        return self._s


def _stats(t: _Total, n: int) -> DispatchStats:
    with np.errstate(invalid="ignore", divide="ignore"):
        latency = np.where(t.lat_den > 0, t.lat_num / np.where(t.lat_den > 0, t.lat_den, 1.0), np.nan)
    zeros = (0,) * n
    return DispatchStats(tuple(np.maximum(t.in_flight, 0).tolist()), zeros, tuple(t.successes.tolist()),
                         tuple(t.failures.tolist()), tuple(latency.tolist()), (0.0,) * n)
