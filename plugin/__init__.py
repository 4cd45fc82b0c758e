"""tritonmix: one cheap, fast, resilient service over a mixed fleet of Triton Inference Servers.

Public entry points:

- ``tritonmix.http`` / ``tritonmix.grpc`` (and their ``.aio``): drop-in replacements of tritonclient's clients.
- ``tritonmix.Fleet``: the fleet file (endpoints, prices, SLO, controller settings).
- ``tritonmix.local``: real local Triton servers (``LocalTritonServer``, ``LocalFleet``).
- ``tritonmix.controller``: the control loop (``Controller``) and its decision as a value (``Plan``).
- ``tritonmix.request`` / ``tritonmix.clients``: the request path and what the drop-ins share (see the README).
- ``tritonmix.dispatch_core``: the compiled weighted dispatcher.
- ``tritonmix.exporters``: torch / diffusers -> Triton model repositories per accelerator.
"""
from __future__ import annotations

from .errors import ConfigError, TritonMixError
from .fleet import EndpointSpec, Fleet
from .settings import ControllerSettings

__version__ = "0.1.0"

__all__ = ["__version__", "ConfigError", "ControllerSettings", "EndpointSpec", "Fleet", "TritonMixError"]
