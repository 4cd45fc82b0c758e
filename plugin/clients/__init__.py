"""What the four drop-in clients share; ``tritonmix.http`` and ``tritonmix.grpc`` (and their ``.aio``) keep only
what differs by protocol: tritonclient's signatures, the send, and how a failure is classified.

    core        resolve_fleet, ClientCore (router, engine, sequences, readiness, controller), EndpointReport
    readiness   ReadinessRefresher: model readiness probed in the background (sync clients)
    sync        SyncClientMixin: life cycle, read-outs and the request path of the sync clients' infer
    aio         AioClientCore, AioClientMixin: the same for the asyncio clients
"""
from __future__ import annotations

from .core import ClientCore, EndpointReport, resolve_fleet

__all__ = ["ClientCore", "EndpointReport", "resolve_fleet"]
