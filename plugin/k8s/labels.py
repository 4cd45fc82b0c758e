"""The names a tritonmix pool's Kubernetes objects carry: written by the manifests, read by discovery.

A pool is one Deployment and one Service. The Service is labelled with its fleet and pool and annotated with what the
controller needs to price and place its endpoints::

    metadata:
      labels:
        tritonmix.io/fleet: sd            # FLEET_LABEL: discovery lists Services with tritonmix.io/fleet=<fleet>
        tritonmix.io/pool: inf2           # POOL_LABEL: the pool's name (the Service's name when absent)
      annotations:
        tritonmix.io/price-per-hour: "0.7582"     # required: $/hour of one replica, a finite number >= 0
        tritonmix.io/accelerator: neuron          # required: gpu | neuron | cpu | any label
        tritonmix.io/instance-type: inf2.xlarge   # optional
        tritonmix.io/capacity-type: on-demand     # optional: on-demand (default) | spot
        tritonmix.io/max-rps: "1.4"               # optional capacity hints, per replica
        tritonmix.io/max-concurrency: "1"

Kubernetes labels each EndpointSlice of a Service with ``kubernetes.io/service-name`` (SERVICE_NAME_LABEL); the
slice's ports carry the Service's port names, which are PORT_NAMES.
"""
from __future__ import annotations

__all__ = [
    "PREFIX", "FLEET_LABEL", "POOL_LABEL", "PRICE_ANNOTATION", "ACCELERATOR_ANNOTATION", "INSTANCE_TYPE_ANNOTATION",
    "CAPACITY_TYPE_ANNOTATION", "MAX_RPS_ANNOTATION", "MAX_CONCURRENCY_ANNOTATION", "SERVICE_NAME_LABEL",
    "HTTP_PORT_NAME", "GRPC_PORT_NAME", "METRICS_PORT_NAME", "PORT_NAMES",
]

PREFIX = "tritonmix.io/"
FLEET_LABEL = PREFIX + "fleet"
POOL_LABEL = PREFIX + "pool"
PRICE_ANNOTATION = PREFIX + "price-per-hour"
ACCELERATOR_ANNOTATION = PREFIX + "accelerator"
INSTANCE_TYPE_ANNOTATION = PREFIX + "instance-type"
CAPACITY_TYPE_ANNOTATION = PREFIX + "capacity-type"
MAX_RPS_ANNOTATION = PREFIX + "max-rps"
MAX_CONCURRENCY_ANNOTATION = PREFIX + "max-concurrency"

#: set by Kubernetes on every EndpointSlice that a Service's selector fills
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

#: the Service's (and so the EndpointSlice's) port names: Triton's three ports
HTTP_PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"
PORT_NAMES = (HTTP_PORT_NAME, GRPC_PORT_NAME, METRICS_PORT_NAME)
