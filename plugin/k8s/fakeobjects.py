"""Services and EndpointSlices as Kubernetes writes them, for ``FakeApiServer.apply`` in tests and benches.

    api.apply(pool_service("inference", "inf2", fleet="sd", price_per_hour=0.7582, accelerator="neuron"))
    api.apply(endpoint_slice("inference", "inf2-a", "inf2", [SliceAddress("inf2-0", "10.0.0.1")], http=8000))
    api.apply(endpoint_slice(..., [SliceAddress("inf2-0", "10.0.0.1", terminating=True)], http=8000))  # draining

A pool's Service carries the labels and annotations of ``tritonmix.k8s.labels``; a slice carries the
``kubernetes.io/service-name`` label, named ports, and per address the conditions the EndpointSlice controller sets
(``ready`` is false while terminating; ``serving`` says whether it still answers).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

from . import labels

__all__ = ["SliceAddress", "pool_service", "endpoint_slice"]


@dataclasses.dataclass(frozen=True)
class SliceAddress:
    """One endpoint of a slice: a pod's address and conditions."""

    pod: str
    address: str
    ready: bool = True
    terminating: bool = False


def pool_service(namespace: str, name: str, *, fleet: str, price_per_hour: Any, accelerator: Optional[str] = "gpu",
                 pool: Optional[str] = None, instance_type: Optional[str] = None,
                 capacity_type: Optional[str] = None, **annotations: str) -> Dict[str, Any]:
    """A pool's Service; ``None`` leaves an annotation out (``price_per_hour=None``: a Service discovery refuses).
    ``annotations`` adds others by their full name: ``**{labels.MAX_RPS_ANNOTATION: "2"}``."""
    notes = {labels.PRICE_ANNOTATION: None if price_per_hour is None else str(price_per_hour),
             labels.ACCELERATOR_ANNOTATION: accelerator, labels.INSTANCE_TYPE_ANNOTATION: instance_type,
             labels.CAPACITY_TYPE_ANNOTATION: capacity_type, **annotations}
    return {"kind": "Service", "metadata": {
        "name": name, "namespace": namespace,
        "labels": {labels.FLEET_LABEL: fleet, labels.POOL_LABEL: pool or name},
        "annotations": {k: v for k, v in notes.items() if v is not None}},
        "spec": {"ports": [{"name": n, "port": p} for n, p in
                           zip(labels.PORT_NAMES, (8000, 8001, 8002))]}}


def endpoint_slice(namespace: str, name: str, service: str, addresses: Optional[Sequence[SliceAddress]], *,
                   http: Optional[int] = 8000, grpc: Optional[int] = 8001,
                   metrics: Optional[int] = 8002) -> Dict[str, Any]:
    """An EndpointSlice of ``service``; ``addresses=None`` writes ``endpoints: null`` (as the API does for none);
    a port given as None is left out."""
    ports = [{"name": n, "port": p, "protocol": "TCP"}
             for n, p in zip(labels.PORT_NAMES, (http, grpc, metrics)) if p is not None]
    endpoints = None if addresses is None else [
        {"addresses": [a.address], "targetRef": {"kind": "Pod", "name": a.pod, "namespace": namespace},
         "conditions": {"ready": a.ready and not a.terminating, "serving": a.ready, "terminating": a.terminating}}
        for a in addresses]
    return {"kind": "EndpointSlice", "addressType": "IPv6" if any(":" in a.address for a in addresses or ()) else
            "IPv4", "endpoints": endpoints, "ports": ports,
            "metadata": {"name": name, "namespace": namespace, "labels": {labels.SERVICE_NAME_LABEL: service}}}
