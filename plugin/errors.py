"""The exceptions tritonmix raises of its own (the drop-in clients raise tritonclient's InferenceServerException).

::

    TritonMixError
     ├── ConfigError           (also ValueError)   a fleet file, argument or spec that is wrong; names the field
     ├── LaunchError           (also RuntimeError) a local Triton server could not be started
     │    ├── TritonNotFound                        the tritonserver binary (nvidia-pytriton wheel) is missing
     │    ├── PortInUse                             a requested port is already taken
     │    ├── ModelRepositoryError                  the repository is missing or holds no model
     │    ├── ModelLoadError                        Triton refused a model; quotes Triton's own reason
     │    └── ServerExited                          the server died before it became ready
     ├── ExportError           (also RuntimeError) an export or its parity check failed
     ├── FaultError            (also RuntimeError) a local fleet's supervisor refused or failed a fault
     └── AttemptAborted        (also ConnectionAbortedError) one attempt of a request ended by its client side,
          │                                     not by the server: a failed attempt, failed over as "maybe ran"
          ├── TransportCancelled                its transport cancelled it (a gRPC channel or aiohttp session
          │                                     closed) while the awaiting task itself was not cancelled
          └── PoolShutDown                      queued on the client's hedging pool when close() shut it down

``NoEndpointAvailable`` lives with the dispatcher (``tritonmix.dispatch_core``), which must not import this package.
"""
from __future__ import annotations

from typing import Optional

__all__ = [
    "TritonMixError",
    "ConfigError",
    "LaunchError",
    "TritonNotFound",
    "PortInUse",
    "ModelRepositoryError",
    "ModelLoadError",
    "ServerExited",
    "ExportError",
    "FaultError",
    "AttemptAborted",
    "TransportCancelled",
    "PoolShutDown",
    "AttemptStalled",
]


class TritonMixError(Exception):
    """Base of every tritonmix-specific error."""


class ConfigError(TritonMixError, ValueError):
    """A configuration value is wrong; the message names the field (and the endpoint, where there is one)."""


class LaunchError(TritonMixError, RuntimeError):
    """A local Triton server could not be started."""


class TritonNotFound(LaunchError):
    """The tritonserver binary or its python backend is not installed."""


class PortInUse(LaunchError):
    """A port asked for is already bound by another process."""


class ModelRepositoryError(LaunchError):
    """The model repository does not exist, is not a folder, or holds no model."""


class ModelLoadError(LaunchError):
    """Triton could not load a model; the message quotes Triton's reason."""


class ServerExited(LaunchError):
    """The server process exited before it became ready; ``signal`` is the signal that killed it (None: it exited
    with a status)."""

    def __init__(self, message: str, signal: Optional[int] = None) -> None:
        super().__init__(message)
        self.signal = signal


class ExportError(TritonMixError, RuntimeError):
    """An export failed (bad model, unknown target, parity outside tolerance)."""


class FaultError(TritonMixError, RuntimeError):
    """The supervisor of a local fleet refused or failed a fault (``tritonmix fleet kill ...``); says why."""


class AttemptAborted(TritonMixError, ConnectionAbortedError):
    """One attempt ended on the client side (see the tree); the request fails over as after a reset."""


class TransportCancelled(AttemptAborted):
    """The transport cancelled an attempt (a gRPC call cancelled when its channel closed); the caller did not."""


class PoolShutDown(AttemptAborted):
    """An attempt queued on the client's hedging pool when close() shut it down (it never ran)."""


class AttemptStalled(AttemptAborted):
    """An interactive attempt got no answer within its endpoint's rescue limit (``tritonmix.request.rescue``): it
    was given up (its gRPC call cancelled, its HTTP connection closed) and the request sent once elsewhere."""
