"""Endpoints that come and go: the contract between a discovery source and the dispatchers that follow it.

A source (Kubernetes EndpointSlices, a test's list) calls ``on_change`` with the WHOLE current set each time
something changes: every endpoint it knows, with its state. Whoever follows it diffs by name:

    new name, ready            joins: takes new requests from the next plan on
    ready -> terminating       drains: no new requests, its requests in flight finish and are recorded
    name absent                leaves: gone from every dispatcher once its in-flight requests are recorded
    not ready (not terminating) stays known and gets no new requests until it turns ready

Names are stable identities (a pod's ``namespace/pod`` or a configured endpoint's name); a spec that changes for a
known name (a new price annotation, say) replaces the old one in place.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

from .fleet import EndpointSpec

if TYPE_CHECKING:
    from .fleet import Fleet

__all__ = ["EndpointState", "EndpointSource", "OnChange", "source_for"]


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


def source_for(fleet: "Fleet") -> Optional[EndpointSource]:
    """The source a fleet names (``endpoints: {kubernetes: ...}``: a ``KubernetesSource``), not yet started; None
    for a fleet of static endpoints."""
    if fleet.discovery is None:
        return None
    from .k8s.discovery import KubernetesSource  # noqa: PLC0415 - the Kubernetes client only where it is used

    return KubernetesSource(fleet.discovery)
