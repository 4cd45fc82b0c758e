"""Real Triton Inference Servers on this machine: one (``LocalTritonServer``) or a whole fleet (``LocalFleet``)."""
from __future__ import annotations

from .server import LocalTritonServer, free_port

__all__ = ["LocalTritonServer", "free_port"]
