"""What ``tritonmix.http.aio`` and ``tritonmix.grpc.aio`` share: one tritonclient aio client per endpoint, the
failover loop as a coroutine, server-level fan-out, and readiness probed from the event loop.

Readiness (see ``tritonmix.clients.readiness``): a model's first request awaits one probe of every endpoint
(concurrently); after that a refresh is started as a background task when ``readiness_interval_s`` has passed or
after an "unknown model" answer; the request that notices does not wait for it. ``close()`` cancels those tasks.
Requests of a sequence stick to one endpoint as in the sync clients (``tritonmix.request.sequences``).
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from tritonclient.utils import raise_error

from ..fleet import Fleet
from ..request.engine import AsyncSend, Classifier
from ..request.fanout import aggregate, endpoint_order, stops_early
from .core import ClientCore, EndpointReport

__all__ = ["AioClientCore"]


class AioClientCore:
    """The protocol-independent half of an aio drop-in client."""

    def __init__(self, fleet: Fleet, clients: List[Any], classify: Classifier, unavailable_status: str, *,
                 seed: Optional[int], clock: Callable[[], float], readiness_interval_s: float,
                 sum_statistics: Callable[[List[Any]], Any], probe_settings: Any = None) -> None:
        self.fleet = fleet
        self.clients = clients
        self.clock = clock
        self.core = ClientCore(fleet, classify, unavailable_status, seed=seed, clock=clock, probe=None,
                               readiness_interval_s=readiness_interval_s, on_not_found=self._not_found,
                               probe_settings=probe_settings)
        self.router = self.core.router
        self.engine = self.core.engine
        self.interval_s = readiness_interval_s
        self.sum_statistics = sum_statistics
        self.closed = False
        self._probed_at: Dict[str, float] = {}
        self._tasks: Set[asyncio.Task] = set()

    async def run(self, model: str, request_class: str, deadline_s: Optional[float], send: AsyncSend,
                  sequence_id: Any = 0, sequence_start: bool = False, sequence_end: bool = False) -> Any:
        if self.closed:
            raise_error("tritonmix: the client is closed")
        probed_at = self._probed_at.get(model)
        if probed_at is None:
            self._probed_at[model] = self.clock()
            await self.refresh(model)
        elif self.clock() - probed_at >= self.interval_s:
            self._refresh_soon(model)
        if sequence_id:
            return await self.core.sequences.run_async(model, request_class, deadline_s, send, sequence_id,
                                                       sequence_start, sequence_end)
        return await self.engine.run_async(model, request_class, deadline_s, send, hedged=True)

    async def refresh(self, model: str) -> None:
        vacant = self.router.vacant()  # a slot whose endpoint left is not probed (its client is closed)
        ready = await asyncio.gather(*(self._probe(c, model) for c, gone in zip(self.clients, vacant) if not gone))
        it = iter(ready)
        ready = [None if gone else next(it) for gone in vacant[: len(self.clients)]]
        self.router.set_model_ready(model, list(ready))

    @staticmethod
    async def _probe(client: Any, model: str) -> Optional[bool]:
        try:
            return bool(await asyncio.wait_for(client.is_model_ready(model), 2.0))
        except Exception:  # noqa: BLE001 - unreachable: unknown
            return None

    def _not_found(self, model: str) -> None:
        if self.clock() - self._probed_at.get(model, 0.0) >= 0.5:
            self._refresh_soon(model)

    def _refresh_soon(self, model: str) -> None:
        self._probed_at[model] = self.clock()
        task = asyncio.get_running_loop().create_task(self.refresh(model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fan_out(self, name: str, policy: str, args: tuple, kwargs: dict) -> Any:
        if self.closed:
            raise_error("tritonmix: the client is closed")
        order = endpoint_order(self.router, policy, args, kwargs)
        results = []
        for i in order:
            try:
                value = await getattr(self.clients[i], name)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - aggregated below
                results.append((i, None, exc))
                continue
            results.append((i, value, None))
            if stops_early(policy, value):
                break
        return aggregate(policy, order, self.router.endpoint_names(), results, name, self.sum_statistics)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine.close()  # requests still in flight end with "the client was closed", not a transport's error
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.core.stop()
        for client in self.clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass


def timed(remaining_s: Optional[float], call: Awaitable[Any]) -> Awaitable[Any]:
    """``call`` bounded by ``remaining_s`` (asyncio.TimeoutError past it, the call cancelled); unbounded when None.
    Every interactive attempt has a bound (its rescue limit), so Python 3.11+ takes ``asyncio.timeout``, which
    makes no task of its own."""
    if remaining_s is None:
        return call
    if _timeout is None:  # Python < 3.11
        return asyncio.wait_for(call, remaining_s)
    return _bounded(remaining_s, call)


_timeout = getattr(asyncio, "timeout", None)


async def _bounded(remaining_s: float, call: Awaitable[Any]) -> Any:
    async with _timeout(remaining_s):  # type: ignore[misc]
        return await call


class AioClientMixin:
    """What the HTTP and gRPC aio drop-ins share: life cycle, router, decisions and the plugin hook.

    The class using it sets ``self._aio`` (an AioClientCore) and ``self._clients`` (one tritonclient aio client per
    endpoint); it must come before tritonclient's base in the bases.
    """

    _aio: "AioClientCore"
    _clients: List[Any]

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, type: Any, value: Any, traceback: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel readiness refreshes, stop the controller, close every endpoint's session or channel."""
        await self._aio.close()

    @property
    def router(self) -> Any:
        """The Router (dispatchers, lanes, masks, counters) of this client."""
        return self._aio.router

    @property
    def controller(self) -> Any:
        """This client's Controller (``tritonmix.controller``), None when the fleet turns it off."""
        return self._aio.core.controller

    @property
    def pinned_sequences(self) -> int:
        """Sequences this client holds pinned to an endpoint (started and not yet ended)."""
        return len(self._aio.core.pins)

    def decisions(self) -> List[Any]:
        """The controller's decision log (empty while no controller runs)."""
        return self._aio.core.decisions()

    def controller_view(self) -> Any:
        """The controller's current view (``ControllerSnapshot``), None while no controller runs or before its first
        tick."""
        return self._aio.core.view()

    def endpoint_reports(self) -> Tuple[EndpointReport, ...]:
        """Per endpoint: how many attempts this client sent there and how they went."""
        return self._aio.core.endpoint_reports()

    def apply_endpoints(self, states: Any) -> Any:
        """Follow a whole discovered set of endpoints (``EndpointState``s or ready ``EndpointSpec``s, by name:
        joins, drains, leaves; ``tritonmix.clients.churn``); returns the router's ``EndpointChange``. A fleet that
        names a discovery source applies its sets by itself."""
        return self._aio.core.apply_endpoints(states)

    def register_plugin(self, plugin: Any) -> None:
        """tritonclient's plugin hook, applied to every endpoint's client."""
        super().register_plugin(plugin)  # type: ignore[misc]
        for client in self._clients:
            client.register_plugin(plugin)

    def unregister_plugin(self) -> None:
        super().unregister_plugin()  # type: ignore[misc]
        for client in self._clients:
            client.unregister_plugin()
