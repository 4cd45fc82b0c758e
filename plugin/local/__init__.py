"""Real Triton Inference Servers on this machine: one (``LocalTritonServer``) or a whole fleet (``LocalFleet``)."""
from __future__ import annotations

from .fleet import LocalEndpoint, LocalFleet
from .proxy import FaultProxy, ProxyStats
from .server import LocalTritonServer, free_port
from .status import EndpointStatus, format_table

__all__ = ["EndpointStatus", "FaultProxy", "LocalEndpoint", "LocalFleet", "LocalTritonServer", "ProxyStats",
           "format_table", "free_port"]
