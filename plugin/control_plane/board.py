"""The Board: every client's reports merged into one router-shaped view, so that the plane's Controller (Observer,
Health, Decider: the same code a client runs in-process) reads the whole fleet's traffic as one client's.

The Board's endpoints are the plane's slots (``endpoints.EndpointSet``: they follow the plane's discovery source,
``apply_endpoints``; ``reap`` shows them to the Controller as a router's are). A client's report is in the client's
own slots and names the endpoint of each (``report``); its figures land on the plane slot of the same NAME, and a
name the plane does not have (an endpoint that left) is dropped, logged at debug level. A slot the plane hands to a
new endpoint starts from zero: counters, gauges, ejection (nothing of the endpoint before it is inherited).

Per client it keeps the last report; a new report adds its differences to the fleet-wide totals:

    counters (arrivals, successes, failures per key; ok, over_slo, failed, abandoned per endpoint):
        total += new - last        per client slot whose name is the same in both reports (a counter that went
                                   down, a restarted client, counts from 0); a slot that holds another endpoint
                                   than in the last report counts from 0 (the client reset it when it took it)
        a client's first report is its baseline: it adds nothing (a client that ran before it connected does not
        land its whole history in one tick)
    gauges (in flight per key and endpoint): the sum over live clients of their latest figure
    latency per key and endpoint: the success-weighted mean over live clients of their EWMA latency
        (weights: the client's successes there, as ``per_model.model_stats`` weighs dispatchers)
    demand share of client c for model m: r_c,m / sum over live clients of r_m, with r_c,m the client's
        interactive arrivals per second between its last two reports (equal shares while nobody has demand)

Gauges are running sums over each client's contribution, kept by plane slot: a report swaps its client's old
contribution for its new one (its figures moved to the plane's slots by name), and a plane slot handed to a new
endpoint has every contribution there zeroed, so that a change of either side's slots never leaves a stale figure in
a sum. A client's gauges
leave the sums once its last report is older than ``gauge_expire_s`` (1.5 intervals: a client that died must not
look like requests stuck at an endpoint; its next report brings them back), and a client silent for ``expire_s`` is
dropped (its counters stay in the totals), as is one that says goodbye (``ingest(final=True)``, its last report as
it closes). An endpoint that enters a client's passive-ejection set is handed to the ejector (the plane's Health),
once per client and episode. Cost: O(keys x n) per report with numpy, O(keys x n) per read of the merged view, and
O(clients x keys) per slot reused; the map from a client's slots to the plane's is built once per (client slots,
plane set), and is the identity (no copy) while both are the same fixed list.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..request.slots import EndpointChange
from .endpoints import EndpointSet
from .report import KeyReport, Report
from .totals import Gauges, MergedStats, Total, growth, latency_terms, merged_stats, same_slots, scatter

__all__ = ["Board", "ClientRow"]

_log = logging.getLogger(__name__)

Key = Tuple[str, str]
Names = Tuple[Optional[str], ...]


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


class _Client:
    __slots__ = ("last", "seen_at", "reports", "rates", "rate_at", "gauges", "contrib")

    def __init__(self, report: Report, now: float) -> None:
        self.gauges = True       # its contribution is in the sums
        self.contrib: Dict[Key, Gauges] = {}
        self.last = report
        self.seen_at = now
        self.reports = 1
        self.rates: Dict[str, float] = {}
        self.rate_at = now


class Board:
    """Merged reports, with the router contract the Controller reads (``tritonmix.request.router``); the
    plane applies nothing to it (clients apply the plans), so the setters only remember. ``fleet``: the plane's
    fleet (``reap`` shows the slots over it); ``discovery``: the set follows a source (``apply_endpoints``)."""

    def __init__(self, names: Sequence[str], *, expire_s: float, gauge_expire_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, fleet: Any = None, discovery: bool = False) -> None:
        specs = fleet.endpoints if fleet is not None else None
        self.endpoints = EndpointSet(names, specs, discovery)
        self._fleet = fleet
        self.expire_s = expire_s
        self.gauge_expire_s = expire_s / 2 if gauge_expire_s is None else gauge_expire_s
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: Dict[str, _Client] = {}
        self._totals: Dict[Key, Total] = {}
        self._ep = np.zeros((3, self.n), np.int64)     # ok, over_slo, failed: fleet-wide cumulative
        self._abandoned = np.zeros(self.n, np.int64)   # attempts clients cancelled (among the successes): cumulative
        self._ejector: Optional[Callable[[int, str, float], None]] = None
        self._listeners: List[Callable[[Key], None]] = []
        self._endpoint_listeners: List[Callable[[EndpointChange], None]] = []
        self.available = [True] * self.n
        #: reports taken and clients dropped for silence, since the start
        self.reports = 0
        self.expired = 0
        #: figures dropped because they named an endpoint the plane does not have (per name, since the start)
        self.unknown: Dict[str, int] = {}
        self._maps: Dict[Names, Tuple[np.ndarray, np.ndarray]] = {}
        self._view: Optional[Dict[Key, MergedStats]] = None
        #: the set as the Controller last followed it (``reap``): (version, wire form), what the tick's plan is over
        self.reaped: Tuple[int, Dict[str, Any]] = (self.endpoints.version, self.endpoints.to_wire())

    @property
    def n(self) -> int:
        return self.endpoints.n

    # ---- the plane's set ---------------------------------------------------------------------------------------
    def apply_endpoints(self, states: Sequence[Any]) -> EndpointChange:
        """Follow the plane's discovery source: reconcile the slots with the whole current set by name (``endpoints.
        EndpointSet.apply``); a slot handed to a new endpoint starts from zero. Listeners (the Controller: a join,
        a leave or a replaced slot brings its next tick forward) hear the change; a slot whose state moved
        (draining, not ready) is told as replaced, so that its plan is not an interval late either. ValueError as
        ``EndpointSet.apply``."""
        with self._lock:
            joined, left, replaced = self.endpoints.apply(states)
            n = self.n
            if self._ep.shape[1] < n:
                self._ep = np.concatenate([self._ep, np.zeros((3, n - self._ep.shape[1]), np.int64)], axis=1)
                self._abandoned = np.concatenate([self._abandoned, np.zeros(n - self._abandoned.size, np.int64)])
                self.available += [True] * (n - len(self.available))
            for total in self._totals.values():
                total.grow(n)
            for i in joined:
                self._ep[:, i] = 0
                self._abandoned[i] = 0
                self.available[i] = True
                for total in self._totals.values():
                    for values in (total.successes, total.failures, total.in_flight, total.lat_num, total.lat_den):
                        values[i] = 0
                for client in self._clients.values():
                    for gauges in client.contrib.values():
                        for values in gauges:
                            if i < values.size:
                                values[i] = 0
            if joined or left:
                self._maps.clear()
            self._view = None
            change = self.endpoints.change(self._fleet, joined, left, replaced) if self._fleet is not None else None
            listeners = list(self._endpoint_listeners)
        if change is not None and (joined or left or replaced):
            for callback in listeners:
                callback(change)
        return change  # type: ignore[return-value]

    def set_version(self) -> Tuple[int, Tuple[int, ...]]:
        """The set's version and, per slot, the version at which its endpoint took it (the load channel's view)."""
        with self._lock:
            return self.endpoints.version, tuple(self.endpoints.since)

    def add_endpoints_listener(self, callback: Callable[[EndpointChange], None]) -> None:
        self._endpoint_listeners.append(callback)

    def reap(self) -> EndpointChange:
        """The slots now (the Controller follows them every tick); remembers the set it showed (``reaped``)."""
        with self._lock:
            if self.reaped[0] != self.endpoints.version:
                self.reaped = (self.endpoints.version, self.endpoints.to_wire())
            return self.endpoints.change(self._fleet)

    def vacant(self) -> Tuple[bool, ...]:
        with self._lock:
            return tuple(self.endpoints.vacant)

    def slot_names(self) -> Names:
        """The endpoint of each plane slot (None: vacant): how a report without ``names`` is read."""
        with self._lock:
            return tuple(None if v else name for name, v in zip(self.endpoints.names, self.endpoints.vacant))

    def _map(self, names: Names) -> Tuple[np.ndarray, np.ndarray]:
        """(client slots, plane slots) of the names both have (lock held); cached per client slots and plane set.
        (None, None): the identity (the client's slots are the plane's)."""
        got = self._maps.get(names)
        if got is None:
            src, dst, unknown = [], [], []
            for k, name in enumerate(names):
                if name is None:
                    continue
                i = self.endpoints.slot(name)
                if i is None:
                    unknown.append(name)
                    self.unknown[name] = self.unknown.get(name, 0) + 1
                else:
                    src.append(k)
                    dst.append(i)
            if unknown:
                _log.debug("reports name %d endpoint(s) this plane does not have (dropped): %s", len(unknown),
                           ", ".join(unknown[:5]))
            n = self.n
            identity = len(names) == n and src == dst == list(range(n))
            got = self._maps[names] = (None, None) if identity else (np.asarray(src, np.intp),  # type: ignore
                                                                      np.asarray(dst, np.intp))
            if len(self._maps) > 4 * len(self._clients) + 16:  # clients' old slot lists: keep the cache small
                self._maps = {names: got}
        return got

    # ---- reports -----------------------------------------------------------------------------------------------
    def ingest(self, report: Report, final: bool = False) -> None:
        """Merge one parsed report (module docstring); hands new passive ejections to the ejector. ``final``: the
        client's last report (it closes): merged, then the client leaves."""
        now = self._clock()
        new_keys: List[Key] = []
        with self._lock:
            self.reports += 1
            client = self._clients.get(report.client)
            names = report.names
            ejected = {names[i] for i in report.ejected}
            if client is None:
                client = self._clients[report.client] = _Client(report, now)
                fresh = ejected
                for k in report.keys:
                    new_keys += self._total(k)
            else:
                last = client.last
                fresh = ejected - {last.names[i] for i in last.ejected}
                new_keys = self._merge(client, last, report, now)
            self._swap_gauges(client, report)
            if final:
                self._drop(report.client)
            self._view = None
            fresh_slots = sorted(i for i in (self.endpoints.slot(x) for x in fresh if x is not None)
                                 if i is not None)
        for key in new_keys:
            for callback in self._listeners:
                callback(key)
        ejector = self._ejector
        if ejector is not None:
            for i in fresh_slots:
                ejector(i, f"connection failures (seen by client {report.client})", now)

    def _total(self, k: KeyReport) -> List[Key]:
        key = (k.model, k.request_class)
        if key in self._totals:
            return []
        self._totals[key] = Total(self.n)
        return [key]

    def _swap_gauges(self, client: _Client, report: Report) -> None:
        """The client's gauge contribution: its last one out of the sums (when in), this report's in (lock held)."""
        self._clear_gauges(client)
        src, dst = self._map(report.names)
        n = self.n
        contrib: Dict[Key, Gauges] = {}
        for k in report.keys:
            num, den = latency_terms(k)
            mine = (k.in_flight.copy(), num, den) if src is None else \
                tuple(scatter(values, src, dst, n) for values in (k.in_flight, num, den))
            contrib[(k.model, k.request_class)] = mine  # type: ignore[assignment]
            total = self._totals[(k.model, k.request_class)]
            for into, values in zip((total.in_flight, total.lat_num, total.lat_den), mine):
                into[: values.size] += values
        client.contrib, client.gauges = contrib, True

    def _clear_gauges(self, client: _Client) -> None:
        if client.gauges:
            for key, gauges in client.contrib.items():
                total = self._totals[key]
                for into, values in zip((total.in_flight, total.lat_num, total.lat_den), gauges):
                    into[: values.size] -= values
            client.contrib, client.gauges = {}, False

    def _drop(self, cid: str) -> None:
        self._clear_gauges(self._clients.pop(cid))

    def _stale_gauges(self) -> None:
        """Take the gauges of clients silent for ``gauge_expire_s`` out of the sums (lock held)."""
        now = self._clock()
        for client in self._clients.values():
            if client.gauges and now - client.seen_at > self.gauge_expire_s:
                self._clear_gauges(client)
                self._view = None

    def _merge(self, client: _Client, last: Report, report: Report, now: float) -> List[Key]:
        same = same_slots(report.names, last.names)
        src, dst = self._map(report.names)
        grew = np.stack([growth(report.ok, last.ok, same), growth(report.over_slo, last.over_slo, same),
                         growth(report.failed, last.failed, same)])
        cancelled = growth(_abandoned(report), _abandoned(last), same)
        if src is None:
            self._ep += grew
            self._abandoned += cancelled
        else:
            self._ep[:, dst] += grew[:, src]
            self._abandoned[dst] += cancelled[src]
        before = {(k.model, k.request_class): k for k in last.keys}
        dt = max(now - client.rate_at, 1e-3)
        arrivals: Dict[str, int] = {}
        created: List[Key] = []
        for k in report.keys:
            key = (k.model, k.request_class)
            old = before.get(key)
            if old is None:
                created += self._total(k)
                continue
            total = self._totals[key]
            grown = k.arrivals - old.arrivals if k.arrivals >= old.arrivals else k.arrivals
            total.arrivals += grown
            if src is None:
                total.successes += growth(k.successes, old.successes, same)
                total.failures += growth(k.failures, old.failures, same)
            else:
                total.successes[dst] += growth(k.successes, old.successes, same)[src]
                total.failures[dst] += growth(k.failures, old.failures, same)[src]
            if k.request_class == "interactive":
                arrivals[k.model] = arrivals.get(k.model, 0) + grown
        client.rates = {m: a / dt for m, a in arrivals.items()}
        client.rate_at = now
        client.last, client.seen_at = report, now
        client.reports += 1
        return created

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
                              tuple(str(c.last.names[i]) for i in c.last.ejected))
                    for cid, c in sorted(self._clients.items())]

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # ---- the router contract (what the Controller reads) ------------------------------------------------------
    def endpoint_names(self) -> Tuple[str, ...]:
        return tuple(self.endpoints.names)

    def dispatchers(self) -> Dict[Key, MergedStats]:
        with self._lock:
            return dict(self._merged())

    def _merged(self) -> Dict[Key, MergedStats]:
        """The merged view (lock held), rebuilt when a report, an expiry or a set change made it stale."""
        self._stale_gauges()
        if self._view is None:
            n = self.n
            self._view = {key: MergedStats(merged_stats(t, t.in_flight, t.lat_num, t.lat_den, n))
                          for key, t in self._totals.items()}
        return self._view

    def stall_view(self) -> Tuple[List[Any], Tuple[int, ...]]:
        """Every key's merged stats and the attempts clients cancelled per endpoint (hedges' losers, among the
        successes), read together: the stall watch does not take a cancelled attempt for an answer of the server
        (``Router.stall_view``; clients that send no ``abandoned`` count none)."""
        with self._lock:
            return [d.stats() for d in self._merged().values()], tuple(self._abandoned.tolist())

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
        if index < len(self.available):
            self.available[index] = bool(available)

    def set_weights(self, model: str, request_class: str, weights: Sequence[float]) -> None:
        """Nothing to apply here: clients apply the plan."""

    def set_limits(self, model: str, request_class: str, limits: Sequence[int]) -> None:
        """Nothing to apply here: clients apply the plan."""

    def set_default_weights(self, weights: Sequence[float]) -> None:
        """Nothing to apply here: clients apply the plan."""


def _abandoned(report: Report) -> np.ndarray:
    """The report's cancelled attempts per client slot (zeros for a client that sends none)."""
    return report.abandoned if report.abandoned is not None else np.zeros(len(report.ok), np.int64)
