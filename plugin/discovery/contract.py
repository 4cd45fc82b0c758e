"""The contract's types (see ``tritonmix.discovery``): one discovered endpoint and what a source implements. A module of
their own, so that sources (``tritonmix.k8s.discovery``) import them without importing the factory that imports them."""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence

from ..fleet import EndpointSpec

__all__ = ["EndpointState", "EndpointSource", "OnChange"]


@dataclasses.dataclass(frozen=True)
class EndpointState:
    """One discovered endpoint: its spec (``url`` set, ``pool`` set where the source knows pools) and state."""

    spec: EndpointSpec
    ready: bool = True
    terminating: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serving(self) -> bool:
        """May take new requests."""
        return self.ready and not self.terminating


OnChange = Callable[[Sequence[EndpointState]], None]


class EndpointSource(Protocol):
    """Something that knows the fleet's endpoints and tells when the set changes."""

    def start(self, on_change: OnChange) -> None:
        """Begin watching; call ``on_change`` with the whole current set once listed, then on every change. Calls
        come from one thread at a time, never concurrently."""

    def stop(self) -> None:
        """Stop watching; no ``on_change`` call starts after this returns."""
