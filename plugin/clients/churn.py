"""The drop-in clients' per-endpoint tritonclient clients follow endpoints that join and leave
(``tritonmix.discovery``, ``tritonmix.request.slots``).

    client.apply_endpoints(states)    the whole current set (``EndpointState``s or ready ``EndpointSpec``s): the
                                      router reconciles by name (joins, drains, leaves); the client makes the
                                      newcomers' clients before they can be picked and closes a left endpoint's
                                      client once its last request in flight has been recorded
    a fleet with ``endpoints: {kubernetes: ...}``   starts with no endpoint; the client starts the source
                                      (``discovery.source_for``) and applies every set it reports, until close()

``ListClients`` keeps one client per slot in the list the request path indexes (gRPC's one client per endpoint, both
aio clients'); the sync HTTP client's per-thread clients follow through ``ThreadClients.follow``. A client made for
a new slot of an aio client is a ``LazyClient``: tritonclient's aio clients must be built on the event loop, and
the router's listener runs on whichever thread reported the change.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, List, Optional, Sequence

from ..errors import ConfigError

__all__ = ["ListClients", "LazyClient", "check_protocol", "running_loop", "both"]

logger = logging.getLogger(__name__)


def check_protocol(states: Sequence[Any], protocol: str) -> None:
    """ConfigError naming the endpoints that a ``protocol`` client cannot reach."""
    specs = [getattr(s, "spec", s) for s in states]
    wrong = [e.name for e in specs if e.protocol != protocol]
    if wrong:
        raise ConfigError(f"endpoints {', '.join(wrong)} are not {protocol} endpoints; a {protocol} client needs "
                          f"{protocol} URLs")


class LazyClient:
    """A tritonclient client built on first use (``factory(url)``), so that an aio client is built on its loop."""

    def __init__(self, factory: Callable[[str], Any], url: str, is_async: bool) -> None:
        self._factory, self._url, self._async = factory, url, is_async
        self._real: Optional[Any] = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        real = self._real
        if real is None:
            with self._lock:
                if self._real is None:
                    self._real = self._factory(self._url)
                real = self._real
        return getattr(real, name)

    def close(self) -> Any:
        if self._real is not None:
            return self._real.close()
        return _nothing() if self._async else None


async def _nothing() -> None:
    return None


class ListClients:
    """The router's endpoints listener for a list of one client per slot (module docstring): appends a client for
    each new slot, replaces the client of a reused slot or of a spec whose URL changed, and closes the client of a
    drained slot (nothing is in flight there then). aio clients are closed on ``loop``."""

    def __init__(self, clients: List[Any], urls: Sequence[Optional[str]], factory: Callable[[str], Any], *,
                 is_async: bool = False, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.clients = clients
        self._urls: List[Optional[str]] = list(urls)
        self._generation = [1] * len(clients)
        self._factory = factory
        self._async, self._loop = is_async, loop
        self._closed: set = set()

    def follow(self, change: Any) -> None:
        eps, gens = change.fleet.endpoints, change.generations
        for i, e in enumerate(eps):
            if i >= len(self.clients):
                self.clients.append(self._make(e.url))
                self._urls.append(e.url)
                self._generation.append(gens[i])
            elif gens[i] != self._generation[i] or e.url != self._urls[i]:
                old, self.clients[i] = self.clients[i], self._make(e.url)
                self._urls[i], self._generation[i] = e.url, gens[i]
                if i not in self._closed:
                    self._close(old)
                self._closed.discard(i)
        for i in change.drained:
            if i not in self._closed and i < len(self.clients):
                self._closed.add(i)
                self._close(self.clients[i])

    def _make(self, url: Optional[str]) -> Any:
        return LazyClient(self._factory, url or "", self._async) if self._async else self._factory(url)

    def _close(self, client: Any) -> None:
        try:
            done = client.close()
        except Exception as exc:  # noqa: BLE001 - closing must not fail the reconcile
            logger.debug("closing %r: %s", client, exc)
            return
        if asyncio.iscoroutine(done):
            loop = self._loop
            if loop is None or loop.is_closed():
                done.close()  # no loop to run it on: the client goes with the process
                return
            loop.call_soon_threadsafe(lambda: loop.create_task(_quietly(done)))


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception as exc:  # noqa: BLE001 - closing must not fail
        logger.debug("closing a left endpoint's client: %s", exc)


def running_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The running event loop, None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def both(*listeners: Callable[[Any], None]) -> Callable[[Any], None]:
    """One endpoints listener that calls each of ``listeners`` in turn."""
    def listener(change: Any) -> None:
        for one in listeners:
            one(change)
    return listener
