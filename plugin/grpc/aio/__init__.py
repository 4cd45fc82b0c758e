"""``tritonmix.grpc.aio``: a drop-in for ``tritonclient.grpc.aio`` (asyncio gRPC) over a fleet.

    import tritonmix.grpc.aio as grpcclient
    async with grpcclient.InferenceServerClient(url="h1:8001,h2:8001") as client:
        result = await client.infer("add_sub", inputs)

Same names and coroutine signatures as tritonclient's; one tritonclient aio client per endpoint. Extra keywords as
in ``tritonmix.grpc``. ``stream_infer`` is pinned to one endpoint: the first one not ejected, in fleet order.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import tritonclient.grpc.aio as _tc
from tritonclient._client import InferenceServerClientBase
from tritonclient.grpc import (InferInput, InferRequestedOutput, InferResult, KeepAliveOptions, model_config_pb2,
                               service_pb2, service_pb2_grpc)
from tritonclient.utils import InferenceServerException

from ...clients.aio import AioClientCore, AioClientMixin
from ...clients.churn import ListClients, running_loop
from ...clients.core import resolve_fleet
from ...request.fanout import install_server_calls
from ...controller.probes import ProbeSettings
from ...fleet import Fleet
from .. import _remaining
from .._transport import UNAVAILABLE_STATUS, classify_grpc, endpoint_kwargs, sum_grpc_statistics

__all__ = ["InferenceServerClient", "InferInput", "InferRequestedOutput", "InferResult", "KeepAliveOptions",
           "InferenceServerException", "model_config_pb2", "service_pb2", "service_pb2_grpc"]


class InferenceServerClient(AioClientMixin, InferenceServerClientBase):
    """tritonclient's gRPC aio ``InferenceServerClient`` over a fleet; constructor arguments apply to every
    endpoint."""

    def __init__(self, url: Optional[str] = None, verbose: bool = False, ssl: bool = False,
                 root_certificates: Any = None, private_key: Any = None, certificate_chain: Any = None,
                 creds: Any = None, keepalive_options: Any = None, channel_args: Any = None, *,
                 fleet: Optional[Fleet] = None, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic, readiness_interval_s: float = 5.0,
                 endpoint_client_factory: Optional[Callable[[str], Any]] = None,
                 control_plane: Any = None) -> None:
        super().__init__()
        fleet = resolve_fleet(url, fleet, "grpc", control_plane)
        kwargs = endpoint_kwargs(verbose, ssl, root_certificates, private_key, certificate_chain, creds,
                                 keepalive_options, channel_args)
        factory = endpoint_client_factory or (lambda url: _tc.InferenceServerClient(url, **kwargs))
        clients = [factory(e.url) for e in fleet.endpoints]
        self._aio = AioClientCore(fleet, clients, classify_grpc, UNAVAILABLE_STATUS, seed=seed, clock=clock,
                                  readiness_interval_s=readiness_interval_s, sum_statistics=sum_grpc_statistics,
                                  probe_settings=ProbeSettings.for_grpc(ssl, root_certificates, private_key,
                                                                        certificate_chain, creds))
        self._clients = clients
        self._aio.core.follow_endpoints(ListClients(clients, [e.url for e in fleet.endpoints], factory, is_async=True,
                                                    loop=running_loop()).follow, "grpc")

    async def infer(self, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
                    sequence_start=False, sequence_end=False, priority=0, timeout=None, client_timeout=None,
                    headers=None, compression_algorithm=None, parameters=None, request_class="interactive",
                    deadline_s=None):
        clients = self._clients

        def send(i: int, remaining_s: Optional[float]) -> Any:
            return clients[i].infer(model_name, inputs, model_version, outputs, request_id, sequence_id,
                                    sequence_start, sequence_end, priority, timeout,
                                    _remaining(client_timeout, remaining_s), headers, compression_algorithm,
                                    parameters)

        return await self._aio.run(model_name, request_class, deadline_s, send, sequence_id, sequence_start,
                                   sequence_end)

    def stream_infer(self, inputs_iterator, stream_timeout=None, headers=None, compression_algorithm=None):
        ejected = self._aio.router.ejected()
        i = next((k for k, e in enumerate(ejected) if not e), 0)
        return self._clients[i].stream_infer(inputs_iterator, stream_timeout, headers, compression_algorithm)

    async def _fan_out(self, name: str, policy: str, args: tuple, kwargs: dict) -> Any:
        return await self._aio.fan_out(name, policy, args, kwargs)


install_server_calls(InferenceServerClient, _tc.InferenceServerClient, ("infer", "stream_infer"))
