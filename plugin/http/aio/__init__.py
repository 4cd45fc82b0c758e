"""``tritonmix.http.aio``: a drop-in for ``tritonclient.http.aio`` (asyncio, aiohttp) over a fleet.

    import tritonmix.http.aio as httpclient
    async with httpclient.InferenceServerClient(url="h1:8000,h2:8000") as client:
        result = await client.infer("add_sub", inputs)

Same names and coroutine signatures as tritonclient's; one tritonclient aio client per endpoint (a client belongs to
one event loop, as tritonclient's does). Extra keywords as in ``tritonmix.http``. Failover on connection errors,
timeouts and 503; a cancelled ``infer`` records its attempt and propagates the cancellation.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

import aiohttp
import tritonclient.http.aio as _tc
from tritonclient._client import InferenceServerClientBase
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.utils import InferenceServerException, raise_error

from ...clients.aio import AioClientCore, AioClientMixin, timed
from ...clients.churn import ListClients, running_loop
from ...clients.core import resolve_fleet
from ...request.fanout import install_server_calls, sum_statistics
from ...controller.probes import ProbeSettings
from ...fleet import Fleet
from ...request.retry import Outcome
from .._transport import UNAVAILABLE_STATUS, classify_answer

__all__ = ["InferenceServerClient", "InferInput", "InferRequestedOutput", "InferResult", "InferenceServerException"]


def classify_aio_http(exc: BaseException) -> Outcome:
    """503 and connection failures fail over (a refused connection was never sent), and so does Triton's python
    backend failing (``classify_answer``); other answers pass through."""
    if isinstance(exc, InferenceServerException):
        return classify_answer(exc)
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return Outcome.NOT_SENT
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return Outcome.MAYBE_RAN
    return Outcome.REQUEST


class InferenceServerClient(AioClientMixin, InferenceServerClientBase):
    """tritonclient's HTTP aio ``InferenceServerClient`` over a fleet; constructor arguments apply to every
    endpoint."""

    def __init__(self, url: Optional[str] = None, verbose: bool = False, conn_limit: int = 100,
                 conn_timeout: float = 60.0, ssl: bool = False, ssl_context: Any = None, *,
                 fleet: Optional[Fleet] = None, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic, readiness_interval_s: float = 5.0,
                 endpoint_client_factory: Optional[Callable[[str], Any]] = None,
                 control_plane: Any = None) -> None:
        super().__init__()
        if url is not None and (url.startswith("http://") or url.startswith("https://")):
            raise_error("url should not include the scheme")
        fleet = resolve_fleet(url, fleet, "http", control_plane)
        factory = endpoint_client_factory or (lambda url: _tc.InferenceServerClient(
            url, verbose=verbose, conn_limit=conn_limit, conn_timeout=conn_timeout, ssl=ssl, ssl_context=ssl_context))
        clients = [factory(e.url) for e in fleet.endpoints]
        self._aio = AioClientCore(fleet, clients, classify_aio_http, UNAVAILABLE_STATUS, seed=seed, clock=clock,
                                  readiness_interval_s=readiness_interval_s, sum_statistics=sum_statistics,
                                  probe_settings=ProbeSettings.for_http_aio(ssl, ssl_context))
        self._clients = clients
        self._aio.core.follow_endpoints(ListClients(clients, [e.url for e in fleet.endpoints], factory, is_async=True,
                                                    loop=running_loop()).follow, "http")

    async def infer(self, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
                    sequence_start=False, sequence_end=False, priority=0, timeout=None, headers=None,
                    query_params=None, request_compression_algorithm=None, response_compression_algorithm=None,
                    parameters=None, request_class="interactive", deadline_s=None):
        clients = self._clients

        def send(i: int, remaining_s: Optional[float]) -> Any:
            return timed(remaining_s, clients[i].infer(
                model_name, inputs, model_version, outputs, request_id, sequence_id, sequence_start, sequence_end,
                priority, timeout, headers, query_params, request_compression_algorithm,
                response_compression_algorithm, parameters))

        return await self._aio.run(model_name, request_class, deadline_s, send, sequence_id, sequence_start,
                                   sequence_end)

    generate_request_body = staticmethod(_tc.InferenceServerClient.generate_request_body)
    parse_response_body = staticmethod(_tc.InferenceServerClient.parse_response_body)

    async def _fan_out(self, name: str, policy: str, args: tuple, kwargs: dict) -> Any:
        return await self._aio.fan_out(name, policy, args, kwargs)


install_server_calls(InferenceServerClient, _tc.InferenceServerClient, ("infer",))
