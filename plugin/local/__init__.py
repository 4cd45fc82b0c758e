"""Real Triton Inference Servers on this machine: one (``LocalTritonServer``) or a whole fleet (``LocalFleet``)."""
from __future__ import annotations

from .fleet import LocalEndpoint, LocalFleet
from .server import LocalTritonServer, free_port
from .status import EndpointStatus, format_table

__all__ = ["EndpointStatus", "LocalEndpoint", "LocalFleet", "LocalTritonServer", "format_table", "free_port"]
