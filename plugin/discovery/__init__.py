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

from typing import TYPE_CHECKING, Optional

from .contract import EndpointSource, EndpointState, OnChange

if TYPE_CHECKING:
    from ..fleet import Fleet

__all__ = ["EndpointState", "EndpointSource", "OnChange", "source_for"]


def source_for(fleet: "Fleet") -> Optional[EndpointSource]:
    """The source a fleet names (``endpoints: {kubernetes: ...}``: a ``KubernetesSource``), not yet started; None
    for a fleet of static endpoints."""
    if fleet.discovery is None:
        return None
    from ..k8s.discovery import KubernetesSource  # noqa: PLC0415 - the Kubernetes client only where it is used

    return KubernetesSource(fleet.discovery)
