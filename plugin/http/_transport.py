"""HTTP transport of the drop-in client: per-thread tritonclient clients and the failure classification.

tritonclient's HTTP client is not thread-safe (geventhttpclient sockets belong to one thread's gevent hub), so each
thread gets its own tritonclient client per endpoint, created on first use; ``close_all`` closes every one of them,
whichever thread made it. Endpoints that join and leave (``tritonmix.request.slots``): ``follow(change)`` gives a
new or reused slot its URL and closes, in every thread, the clients of a slot whose endpoint left once its requests
are all recorded (a drained or reused slot: nothing is in flight on them then).
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import tritonclient.http as _tc
from geventhttpclient.response import HTTPParseError
from tritonclient.utils import InferenceServerException

from ..request.retry import Outcome, backend_failed

__all__ = ["ThreadClients", "classify_http", "classify_answer", "UNAVAILABLE_STATUS", "keep_alive", "KEEPALIVE_IDLE_S",
           "KEEPALIVE_INTERVAL_S", "KEEPALIVE_COUNT", "USER_TIMEOUT_S", "Watchdog", "WATCHDOG_PERIOD_S"]

logger = logging.getLogger(__name__)

UNAVAILABLE_STATUS = "503"


def classify_http(exc: BaseException) -> Outcome:
    """503 and raw socket failures fail over, and so does Triton's python backend failing (a 500 that says its stub
    is not healthy: ``backend_failed``); any other answer of the server is the request's own error."""
    if isinstance(exc, InferenceServerException):
        return classify_answer(exc)
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return Outcome.NOT_SENT
    if isinstance(exc, (TimeoutError, ConnectionError, HTTPParseError)):
        return Outcome.MAYBE_RAN
    if isinstance(exc, OSError):
        return Outcome.NOT_SENT if exc.errno in _NOT_SENT_ERRNOS else Outcome.MAYBE_RAN
    return Outcome.REQUEST


def classify_answer(exc: InferenceServerException) -> Outcome:
    """An HTTP answer's outcome: 503 UNAVAILABLE; a python-backend failure (500) MAYBE_RAN; else REQUEST."""
    status = exc.status()
    if status == UNAVAILABLE_STATUS:
        return Outcome.UNAVAILABLE
    if status == "500" and backend_failed(exc.message() or ""):
        return Outcome.MAYBE_RAN
    return Outcome.REQUEST


_NOT_SENT_ERRNOS = frozenset({101, 111, 113, 99})  # ENETUNREACH, ECONNREFUSED, EHOSTUNREACH, EADDRNOTAVAIL

#: TCP keep-alive on every endpoint connection of the sync HTTP client: a connection whose peer vanished (no FIN, no
#: RST) while nothing was outstanding is closed by the kernel after IDLE + INTERVAL x COUNT = 25 s; one with bytes
#: sent and never acknowledged, after USER_TIMEOUT_S (TCP_USER_TIMEOUT). The read on it then fails (maybe ran: failed
#: over). A peer whose kernel still answers (a frozen process) is not dead to TCP: the rescue limit covers that.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_S = 25


def _tune(sock: Any) -> None:
    """SO_KEEPALIVE with the probes above, and TCP_USER_TIMEOUT, where the platform has them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", USER_TIMEOUT_S * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def keep_alive(client: Any) -> Any:
    """Turn on TCP keep-alive (``_tune``) for the connections a tritonclient HTTP client opens from now on; returns
    the client. tritonclient has no socket-options argument, so this sets geventhttpclient's documented
    ``after_connect`` hook on the client's connection pool; a client without one (a custom transport from
    ``endpoint_client_factory``) is left as it is."""
    pool = getattr(getattr(client, "_client_stub", None), "_connection_pool", None)
    if pool is not None and hasattr(pool, "after_connect"):
        pool.after_connect = _tune
    return client


#: how often a thread's watchdog looks at its attempts while the thread waits on the network (the rescue of an
#: attempt comes at most this late)
WATCHDOG_PERIOD_S = 0.05


class Watchdog(threading.local):
    """Per thread: the rescue deadline of each greenlet's attempt in flight (``due``: greenlet -> time on
    ``clock``), and a repeating timer on the thread's gevent hub that throws ``exc_type`` into a greenlet whose
    deadline has passed (once; the entry goes). The timer is unref'd and fires only while the thread waits in
    gevent, which is when an attempt can be stuck: an attempt costs a dict entry, not a timer of its own."""

    def __init__(self, exc_type: type, clock: Callable[[], float]) -> None:
        self.exc_type = exc_type
        self.clock = clock
        self.due: Optional[Dict[Any, float]] = None
        self._timer: Any = None

    def start(self) -> Dict[Any, float]:
        """Start this thread's timer; returns ``due``."""
        import gevent  # noqa: PLC0415 - gevent is tritonclient.http's own dependency, loaded with it

        self.due = {}
        self._timer = gevent.get_hub().loop.timer(WATCHDOG_PERIOD_S, WATCHDOG_PERIOD_S, ref=False)
        self._timer.start(self._look)
        return self.due

    def _look(self) -> None:
        due = self.due
        if not due:
            return
        now = self.clock()
        for glet, at in list(due.items()):
            if now >= at and due.pop(glet, None) is not None:
                glet.throw(self.exc_type)


class _Clients(dict):
    """One thread's clients by slot; a slot without one reads None (no per-thread growth when the set grows)."""

    def __missing__(self, i: int) -> None:
        return None


class _PerThread(threading.local):
    """``clients``: this thread's client per endpoint (None until made); each thread's table is registered with its
    owner so that a slot's clients can be closed in every thread."""

    def __init__(self, tables: List[Dict[int, Any]], lock: threading.Lock) -> None:
        self.clients: Dict[int, Any] = _Clients()
        with lock:
            tables.append(self.clients)


class ThreadClients:
    """One tritonclient HTTP client per (thread, endpoint), made lazily by ``factory(url)``.

    Hot path: ``local.clients[i]`` is this thread's client of endpoint i or None; ``get(i)`` makes it when None."""

    def __init__(self, urls: Tuple[str, ...], factory: Callable[[str], Any]) -> None:
        self._urls: List[Optional[str]] = list(urls)
        self._generation: List[int] = [1] * len(urls)
        self._factory = factory
        self._lock = threading.Lock()
        self._tables: List[Dict[int, Any]] = []
        self.local = _PerThread(self._tables, self._lock)
        self._all: List[Any] = []
        self._closed = False

    def follow(self, change: Any) -> None:
        """The router's endpoints listener (``Router.add_endpoints_listener``): URLs for new and reused slots (a
        spec changed in place too), every thread's clients of drained and reused slots closed."""
        eps, gens = change.fleet.endpoints, change.generations
        stale = set(change.drained)
        with self._lock:
            for i, e in enumerate(eps):
                if i >= len(self._urls):
                    self._urls.append(e.url)
                    self._generation.append(gens[i])
                elif gens[i] != self._generation[i] or e.url != self._urls[i]:
                    self._urls[i], self._generation[i] = e.url, gens[i]
                    stale.add(i)
        self._close_slots(sorted(stale))

    def _close_slots(self, slots: Sequence[int]) -> None:
        for i in slots:
            with self._lock:
                clients = [c for c in (table.pop(i, None) for table in self._tables) if c is not None]
            for client in clients:
                self._close(client)

    def get(self, i: int) -> Any:
        clients = self.local.clients
        client = clients[i]
        return client if client is not None else self._make(clients, i)

    def _make(self, clients: List[Any], i: int) -> Any:
        with self._lock:
            if self._closed:
                raise InferenceServerException(msg="tritonmix: the client is closed")
            client = self._factory(self._urls[i])
            self._all.append(client)
        clients[i] = client
        return client

    def discard(self, i: int) -> None:
        """Close this thread's client of endpoint i (after a timeout left its connection in an unknown state)."""
        clients = self.local.clients
        if clients[i] is None:
            return
        client, clients[i] = clients[i], None
        self._close(client)

    def release_thread(self) -> None:
        """Close the calling thread's clients (a helper thread on its way out)."""
        for i in list(self.local.clients):
            self.discard(i)

    def _close(self, client: Any) -> None:
        with self._lock:
            if client in self._all:
                self._all.remove(client)
        _safe_close(client)

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._all = self._all, []
        for client in clients:
            _safe_close(client)
        self._tables = []
        self.local = _PerThread(self._tables, self._lock)


def _safe_close(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
        logger.debug("closing %r: %s", client, exc)


def probe_factory(kwargs: dict, timeout_s: float = 2.0) -> Callable[[str], Any]:
    """A factory of short-timeout tritonclient clients for readiness probes."""
    def make(url: str) -> Any:
        args = dict(kwargs, connection_timeout=min(timeout_s, kwargs.get("connection_timeout", timeout_s)),
                    network_timeout=min(timeout_s, kwargs.get("network_timeout", timeout_s)), verbose=False)
        return _tc.InferenceServerClient(url, **args)
    return make


#: answers that say the server is up but this probe may not ask (an authenticating proxy in front of Triton)
_AUTH_STATUSES = frozenset((401, 403, 407))


def model_ready(client: Any, model: str) -> Optional[bool]:
    """Tri-state readiness of ``model``: True (200), None when the answer is an auth refusal (the endpoint is up but
    the probe carries no credentials: readiness unknown, never "not ready"), False otherwise (404, 503, ...).
    tritonclient's ``is_model_ready`` folds a 401 into False, hence the direct GET on the same client."""
    response = client._get(request_uri="v2/models/{}/ready".format(quote(model)), headers=None, query_params=None)
    status = response.status_code
    if status == 200:
        return True
    if status in _AUTH_STATUSES:
        return None
    return False
