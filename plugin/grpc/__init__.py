"""``tritonmix.grpc``: a drop-in for ``tritonclient.grpc`` that spreads requests over a fleet of Triton servers.

    import tritonmix.grpc as grpcclient
    client = grpcclient.InferenceServerClient(url="h1:8001,h2:8001")
    client.async_infer("add_sub", inputs, callback=lambda result, error: ...)   # fails over before the callback

Same names, signatures and return types as tritonclient 2.x's gRPC module (``InferInput``, ``InferResult``,
``KeepAliveOptions``, ... are tritonclient's own). Extra keywords: ``fleet=``, ``seed=``, ``clock=``,
``readiness_interval_s=`` and ``endpoint_client_factory=`` (url -> a tritonclient client, for tests and custom
transports) on the constructor; ``request_class=`` and ``deadline_s=`` on ``infer`` / ``async_infer``
(``client_timeout`` still bounds each attempt). A stream (``start_stream``) is pinned to one endpoint: the first one
not ejected, in fleet order. The requests of a sequence (``sequence_id``) sent with ``infer`` stay on the endpoint
that holds its state (``tritonmix.request.sequences``); the callback form ``async_infer`` does not pin sequences yet.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import tritonclient.grpc as _tc
from tritonclient._client import InferenceServerClientBase
from tritonclient.grpc import (InferInput, InferRequestedOutput, InferResult, KeepAliveOptions,
                               model_config_pb2, service_pb2, service_pb2_grpc)
from tritonclient.utils import InferenceServerException, raise_error

from ..clients.churn import ListClients
from ..clients.core import ClientCore, resolve_fleet
from ..clients.sync import SyncClientMixin
from ..controller.probes import ProbeSettings
from ..fleet import Fleet
from ..request.callback import FailoverCall
from ..request.engine import Send
from ..request.fanout import aggregate, call_in_order, endpoint_order, install_server_calls
from ._transport import UNAVAILABLE_STATUS, classify_grpc, endpoint_kwargs, sum_grpc_statistics

__all__ = [
    "InferenceServerClient",
    "InferInput",
    "InferRequestedOutput",
    "InferResult",
    "KeepAliveOptions",
    "InferenceServerException",
    "model_config_pb2",
    "service_pb2",
    "service_pb2_grpc",
]


def _remaining(client_timeout: Optional[float], remaining_s: Optional[float]) -> Optional[float]:
    if remaining_s is None:
        return client_timeout
    return remaining_s if client_timeout is None else min(client_timeout, remaining_s)


class InferenceServerClient(SyncClientMixin, InferenceServerClientBase):
    """tritonclient's gRPC ``InferenceServerClient`` over a fleet; one shared tritonclient client per endpoint.
    Every constructor argument applies to every endpoint."""

    def __init__(self, url: Optional[str] = None, verbose: bool = False, ssl: bool = False,
                 root_certificates: Any = None, private_key: Any = None, certificate_chain: Any = None,
                 creds: Any = None, keepalive_options: Any = None, channel_args: Any = None, *,
                 fleet: Optional[Fleet] = None, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic, readiness_interval_s: float = 5.0,
                 endpoint_client_factory: Optional[Callable[[str], Any]] = None,
                 control_plane: Any = None) -> None:
        super().__init__()
        self._closed = True
        self._fleet = resolve_fleet(url, fleet, "grpc", control_plane)
        self._verbose = verbose
        kwargs = endpoint_kwargs(verbose, ssl, root_certificates, private_key, certificate_chain, creds,
                                 keepalive_options, channel_args)
        factory = endpoint_client_factory or (lambda url: _tc.InferenceServerClient(url, **kwargs))
        self._clients = [factory(e.url) for e in self._fleet.endpoints]
        self._stream_client: Optional[Any] = None
        self._core = ClientCore(self._fleet, classify_grpc, UNAVAILABLE_STATUS, seed=seed, clock=clock,
                                probe=self._probe, readiness_interval_s=readiness_interval_s,
                                probe_settings=ProbeSettings.for_grpc(ssl, root_certificates, private_key,
                                                                      certificate_chain, creds))
        self._core.follow_endpoints(ListClients(self._clients, [e.url for e in self._fleet.endpoints], factory).follow,
                                    "grpc")
        #: hedged requests (``controller.hedge``): each attempt is tritonclient's async_infer, cancelled when it loses
        self._lanes = {} if self._core.engine.hedged else self._core.router.lanes
        self._rescue = self._core.engine.rescue.table
        self._closed = False

    # ---- life cycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the controller, the readiness thread and any stream; close every endpoint's channel."""
        if self._closed:
            return
        self._closed = True
        self._core.stop()
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass

    def register_plugin(self, plugin: Any) -> None:
        super().register_plugin(plugin)
        for client in self._clients:
            client.register_plugin(plugin)

    def unregister_plugin(self) -> None:
        super().unregister_plugin()
        for client in self._clients:
            client.unregister_plugin()

    def _probe(self, i: int, model: str) -> Optional[bool]:
        return bool(self._clients[i].is_model_ready(model, client_timeout=2.0))

    def _check_open(self) -> None:
        if self._closed:
            raise_error("tritonmix: the client is closed")

    # ---- inference ---------------------------------------------------------------------------------------------

    def infer(self, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
              sequence_start=False, sequence_end=False, priority=0, timeout=None, client_timeout=None,
              headers=None, compression_algorithm=None, parameters=None, request_class="interactive",
              deadline_s=None):
        key = (model_name, request_class)
        lane = self._lanes.get(key)
        if lane is not None and deadline_s is None and not sequence_id and not self._closed:
            t0 = lane.begin()  # the first attempt (tritonmix.clients.sync)
            i = -1
            rescue_s = math.inf
            try:
                i = lane.pick()
                limit_s = client_timeout
                limits = self._rescue.get(key)  # interactive: the attempt's rescue limit (tritonmix.request.rescue)
                if limits is not None:
                    if t0 >= limits.refresh_at:
                        limits.refresh(t0)
                    if client_timeout is None or limits.limits[i] < client_timeout:
                        limit_s = rescue_s = limits.limits[i]  # gRPC cancels the call at its deadline
                result = self._clients[i].infer(model_name, inputs, model_version, outputs, request_id,
                                                 sequence_id, sequence_start, sequence_end, priority, timeout,
                                                 limit_s, headers, compression_algorithm, parameters)
            except BaseException as exc:
                failure = (i, t0, exc, rescue_s)
            else:
                lane.succeeded(i, t0)
                return result
        else:
            failure = None
        args = (model_name, inputs, model_version, outputs, request_id, sequence_id, sequence_start, sequence_end,
                priority, timeout, client_timeout, headers, compression_algorithm, parameters)
        if failure is not None:
            return self._resume(args, request_class, *failure)
        return self._infer(args, request_class, deadline_s, sequence_id, sequence_start, sequence_end)

    def _run_hedged(self, args: tuple, request_class: str, deadline_s: Optional[float]) -> InferResult:
        return self._core.engine.run_hedged(args[0], request_class, deadline_s, self._starter(args))

    def _starter(self, args: tuple) -> Callable[[int, Optional[float], Callable[..., None]], Any]:
        """One cancellable attempt of ``infer(*args)`` on endpoint i (tritonclient's async_infer; a hedge's loser is
        cancelled through its CallContext)."""
        clients = self._clients
        (model_name, inputs), middle, client_timeout, tail = args[:2], args[2:10], args[10], args[11:]

        def start(i: int, remaining_s: Optional[float], done: Callable[..., None]) -> Any:
            # async_infer takes infer's arguments with the callback third
            return clients[i].async_infer(model_name, inputs, done, *middle, _remaining(client_timeout, remaining_s),
                                          *tail).cancel

        return start

    def _sender(self, args: tuple) -> Send:
        """One attempt of ``infer(*args)`` on endpoint i; args[10] (client_timeout) bounded by remaining_s."""
        clients = self._clients
        head, client_timeout, tail = args[:10], args[10], args[11:]

        def send(i: int, remaining_s: Optional[float]) -> InferResult:
            return clients[i].infer(*head, _remaining(client_timeout, remaining_s), *tail)

        return send

    def async_infer(self, model_name, inputs, callback, model_version="", outputs=None, request_id="",
                    sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
                    client_timeout=None, headers=None, compression_algorithm=None, parameters=None,
                    request_class="interactive", deadline_s=None):
        clients = self._clients

        def start(i: int, remaining_s: Optional[float], done: Callable[..., None]) -> Any:
            return clients[i].async_infer(model_name, inputs, done, model_version, outputs, request_id,
                                          sequence_id, sequence_start, sequence_end, priority, timeout,
                                          _remaining(client_timeout, remaining_s), headers,
                                          compression_algorithm, parameters)

        self._check_open()
        return FailoverCall(self._core.engine, model_name, request_class, deadline_s, start, callback).begin()

    # ---- streams: pinned to one endpoint -------------------------------------------------------------------

    def start_stream(self, callback, stream_timeout=None, headers=None, compression_algorithm=None):
        self._check_open()
        if self._stream_client is not None:
            raise_error("cannot start another stream with one already running. "
                        "'InferenceServerClient' supports only a single active stream at a given time.")
        ejected = self._core.router.ejected()
        i = next((k for k, e in enumerate(ejected) if not e), 0)
        self._clients[i].start_stream(callback, stream_timeout, headers, compression_algorithm)
        self._stream_client = self._clients[i]

    def stop_stream(self, cancel_requests=False):
        client, self._stream_client = self._stream_client, None
        if client is not None:
            client.stop_stream(cancel_requests)

    def async_stream_infer(self, model_name, inputs, model_version="", outputs=None, request_id="",
                           sequence_id=0, sequence_start=False, sequence_end=False,
                           enable_empty_final_response=False, priority=0, timeout=None, parameters=None):
        if self._stream_client is None:
            raise_error("stream not available, use start_stream() to make one available.")
        return self._stream_client.async_stream_infer(model_name, inputs, model_version, outputs, request_id,
                                                      sequence_id, sequence_start, sequence_end,
                                                      enable_empty_final_response, priority, timeout, parameters)

    # ---- server-level calls (aggregations in tritonmix.request.fanout) ------------------------------------------

    def _fan_out(self, name: str, policy: str, args: tuple, kwargs: dict) -> Any:
        self._check_open()
        router = self._core.router
        order = endpoint_order(router, policy, args, kwargs)
        results = call_in_order(order, lambda i: getattr(self._clients[i], name)(*args, **kwargs), policy)
        return aggregate(policy, order, router.endpoint_names(), results, name, sum_grpc_statistics)


install_server_calls(InferenceServerClient, _tc.InferenceServerClient,
                     ("infer", "async_infer", "start_stream", "stop_stream", "async_stream_infer"))
