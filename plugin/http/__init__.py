"""``tritonmix.http``: a drop-in for ``tritonclient.http`` that spreads requests over a fleet of Triton servers.

    import tritonmix.http as httpclient          # the only change to tritonclient code
    client = httpclient.InferenceServerClient(url="h1:8000,h2:8000")   # or a fleet file, or fleet=Fleet(...)
    result = client.infer("add_sub", inputs)    # picked by the dispatch core; fails over on connection errors

Same names, signatures and return types as tritonclient 2.x's HTTP module; ``InferInput``,
``InferRequestedOutput``, ``InferResult`` and ``InferenceServerException`` are tritonclient's own. Extra keywords:
``fleet=``, ``seed=``, ``clock=``, ``readiness_interval_s=`` and ``endpoint_client_factory=`` (url -> a
tritonclient client, for tests and custom transports) on the constructor; ``request_class=`` and ``deadline_s=`` on
``infer`` / ``async_infer``. The request path (failover, retry budget, hedging, sequences) is
``tritonmix.request``; what the drop-ins share is ``tritonmix.clients``. The requests of a sequence
(``sequence_id``) stay on the endpoint that holds its state, with ``infer`` and ``async_infer``.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, List, Optional

import gevent
import gevent.pool
from gevent import getcurrent
import tritonclient.http as _tc
from tritonclient._client import InferenceServerClientBase
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.utils import InferenceServerException, raise_error

from ..clients.churn import both
from ..clients.core import ClientCore, resolve_fleet
from ..clients.sync import SyncClientMixin
from ..controller.probes import ProbeSettings
from ..request import SyncHedger
from ..request.engine import Send
from ..request.fanout import aggregate, call_in_order, endpoint_order, install_server_calls, sum_statistics
from ..fleet import Fleet
from ._transport import (UNAVAILABLE_STATUS, ThreadClients, Watchdog, classify_http, keep_alive, model_ready,
                         probe_factory)

__all__ = [
    "InferenceServerClient",
    "InferInput",
    "InferRequestedOutput",
    "InferResult",
    "InferAsyncRequest",
    "InferenceServerException",
]


class _Stalled(BaseException):
    """Thrown into the greenlet of an attempt that reached its rescue limit. Not an OSError, which
    geventhttpclient would take for a broken pooled connection and send again on the same endpoint."""


class InferAsyncRequest:
    """Handle of an ongoing ``async_infer`` (tritonclient's ``InferAsyncRequest`` contract): ``get_result``."""

    def __init__(self, greenlet: Any, verbose: bool = False) -> None:
        self._greenlet = greenlet
        self._verbose = verbose

    def get_result(self, block: bool = True, timeout: Optional[float] = None) -> InferResult:
        """The InferResult (after failover); InferenceServerException when it failed or did not come in time."""
        try:
            return self._greenlet.get(block=block, timeout=timeout)
        except gevent.Timeout:
            raise_error("failed to obtain inference response")


class InferenceServerClient(SyncClientMixin, InferenceServerClientBase):
    """tritonclient's HTTP ``InferenceServerClient`` over a fleet; safe to share across threads (each thread gets
    its own tritonclient client per endpoint). Every constructor argument applies to every endpoint."""

    def __init__(self, url: Optional[str] = None, verbose: bool = False, concurrency: int = 1,
                 connection_timeout: float = 60.0, network_timeout: float = 60.0,
                 max_greenlets: Optional[int] = None, ssl: bool = False, ssl_options: Any = None,
                 ssl_context_factory: Any = None, insecure: bool = False, *, fleet: Optional[Fleet] = None,
                 seed: Optional[int] = None, clock: Callable[[], float] = time.monotonic,
                 readiness_interval_s: float = 5.0,
                 endpoint_client_factory: Optional[Callable[[str], Any]] = None,
                 control_plane: Any = None) -> None:
        super().__init__()
        self._closed = True
        if url is not None and (url.startswith("http://") or url.startswith("https://")):
            raise_error("url should not include the scheme")
        self._fleet = resolve_fleet(url, fleet, "http", control_plane)
        self._verbose = verbose
        self._max_greenlets = max_greenlets
        self._factory = endpoint_client_factory
        self._kwargs = dict(verbose=verbose, concurrency=concurrency, connection_timeout=connection_timeout,
                            network_timeout=network_timeout, ssl=ssl, ssl_options=ssl_options,
                            ssl_context_factory=ssl_context_factory, insecure=insecure)
        urls = tuple(e.url for e in self._fleet.endpoints)
        self._clients = ThreadClients(urls, self._make_endpoint_client)
        self._probes = ThreadClients(urls, probe_factory(self._kwargs))
        self._local = threading.local()
        self._pools: List[gevent.pool.Pool] = []
        self._core = ClientCore(self._fleet, classify_http, UNAVAILABLE_STATUS, seed=seed, clock=clock,
                                probe=self._probe, readiness_interval_s=readiness_interval_s,
                                on_probe_thread_exit=self._probes.release_thread,
                                probe_settings=ProbeSettings.for_http(ssl, ssl_options, ssl_context_factory, insecure))
        self._core.follow_endpoints(both(self._clients.follow, self._probes.follow), "http")
        self._hedger = SyncHedger.for_engine(self._core.engine)  # None unless the fleet enables hedging
        self._lanes = self._core.router.lanes if self._hedger is None else {}
        self._rescue = self._core.engine.rescue.table
        self._watchdog = Watchdog(_Stalled, clock)
        self._closed = False

    # ---- life cycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the controller and the readiness thread, wait for this thread's async requests, close every
        endpoint connection (of every thread). Later calls raise InferenceServerException."""
        if self._closed:
            return
        self._closed = True
        pool = getattr(self._local, "pool", None)
        if pool is not None:
            pool.join()
        if self._hedger is not None:
            self._hedger.close()
        self._core.stop()
        self._clients.close_all()
        self._probes.close_all()

    def register_plugin(self, plugin: Any) -> None:
        """tritonclient's plugin hook, applied to every endpoint's client (now and later)."""
        super().register_plugin(plugin)
        for client in list(self._clients._all):
            client.register_plugin(plugin)

    def unregister_plugin(self) -> None:
        super().unregister_plugin()
        for client in list(self._clients._all):
            client.unregister_plugin()

    def _make_endpoint_client(self, url: str) -> Any:
        factory = self._factory
        client = factory(url) if factory is not None else keep_alive(_tc.InferenceServerClient(url, **self._kwargs))
        if self._plugin is not None:
            client.register_plugin(self._plugin)
        return client

    def _probe(self, i: int, model: str) -> Optional[bool]:
        return model_ready(self._probes.get(i), model)

    # ---- inference ---------------------------------------------------------------------------------------------

    def infer(self, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
              sequence_start=False, sequence_end=False, priority=0, timeout=None, headers=None,
              query_params=None, request_compression_algorithm=None, response_compression_algorithm=None,
              parameters=None, request_class="interactive", deadline_s=None):
        key = (model_name, request_class)
        lane = self._lanes.get(key)
        if lane is not None and deadline_s is None and not sequence_id and not self._closed:
            t0 = lane.begin()  # the first attempt (tritonmix.clients.sync)
            i = -1
            rescue_s = math.inf
            try:
                i = lane.pick()
                client = self._clients.local.clients[i]
                if client is None:
                    client = self._clients.get(i)
                limits = self._rescue.get(key)  # interactive: the attempt's rescue limit (tritonmix.request.rescue)
                if limits is None:
                    result = client.infer(model_name, inputs, model_version, outputs, request_id, sequence_id,
                                          sequence_start, sequence_end, priority, timeout, headers, query_params,
                                          request_compression_algorithm, response_compression_algorithm, parameters)
                else:
                    if t0 >= limits.refresh_at:
                        limits.refresh(t0)
                    rescue_s = limits.limits[i]
                    due = self._watchdog.due
                    if due is None:
                        due = self._watchdog.start()
                    glet = getcurrent()
                    due[glet] = t0 + rescue_s  # past it, the thread's watchdog throws _Stalled into this greenlet
                    try:
                        result = client.infer(model_name, inputs, model_version, outputs, request_id, sequence_id,
                                              sequence_start, sequence_end, priority, timeout, headers,
                                              query_params, request_compression_algorithm,
                                              response_compression_algorithm, parameters)
                    finally:
                        due.pop(glet, None)
            except _Stalled:
                self._clients.discard(i)  # its connection is mid-request: closed, not reused
                failure = (i, t0, TimeoutError("no answer within the rescue limit"), rescue_s)
            except BaseException as exc:
                failure = (i, t0, exc, rescue_s)
            else:
                lane.succeeded(i, t0)
                return result
        else:
            failure = None
        args = (model_name, inputs, model_version, outputs, request_id, sequence_id, sequence_start, sequence_end,
                priority, timeout, headers, query_params, request_compression_algorithm,
                response_compression_algorithm, parameters)
        if failure is not None:
            return self._resume(args, request_class, *failure)
        return self._infer(args, request_class, deadline_s, sequence_id, sequence_start, sequence_end)

    def _run_hedged(self, args: tuple, request_class: str, deadline_s: Optional[float]) -> InferResult:
        return self._hedger.run(args[0], request_class, deadline_s, self._sender(args))  # type: ignore[union-attr]

    def _sender(self, args: tuple) -> Send:
        """One attempt of ``infer(*args)`` on endpoint i, bounded by the deadline's remaining_s (gevent)."""
        clients = self._clients

        def send(i: int, remaining_s: Optional[float]) -> InferResult:
            client = clients.get(i)
            if remaining_s is None:
                return client.infer(*args)
            try:
                with gevent.Timeout(remaining_s):
                    return client.infer(*args)
            except gevent.Timeout:
                clients.discard(i)  # its connection is mid-request: do not reuse it
                raise TimeoutError(f"no response within the deadline ({remaining_s:.3f} s left)") from None

        return send

    def async_infer(self, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
                    sequence_start=False, sequence_end=False, priority=0, timeout=None, headers=None,
                    query_params=None, request_compression_algorithm=None, response_compression_algorithm=None,
                    parameters=None, request_class="interactive", deadline_s=None):
        if self._closed:
            raise_error("tritonmix: the client is closed")
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = gevent.pool.Pool(self._max_greenlets)
        g = pool.apply_async(self.infer, (model_name, inputs, model_version, outputs, request_id, sequence_id,
                                          sequence_start, sequence_end, priority, timeout, headers, query_params,
                                          request_compression_algorithm, response_compression_algorithm,
                                          parameters, request_class, deadline_s))
        g.start()
        gevent.sleep(0.01)  # as tritonclient: let the greenlet send before returning
        return InferAsyncRequest(g, self._verbose)

    generate_request_body = staticmethod(_tc.InferenceServerClient.generate_request_body)
    parse_response_body = staticmethod(_tc.InferenceServerClient.parse_response_body)

    # ---- server-level calls (aggregations in tritonmix.request.fanout) ------------------------------------------

    def _fan_out(self, name: str, policy: str, args: tuple, kwargs: dict) -> Any:
        if self._closed:
            raise_error("tritonmix: the client is closed")
        router = self._core.router
        order = endpoint_order(router, policy, args, kwargs)
        results = call_in_order(order, lambda i: getattr(self._clients.get(i), name)(*args, **kwargs), policy)
        return aggregate(policy, order, router.endpoint_names(), results, name, sum_statistics)


install_server_calls(InferenceServerClient, _tc.InferenceServerClient, ("infer", "async_infer"))
