"""Reading a pool from its Kubernetes objects: the Service's labels and annotations, the EndpointSlice's endpoints.

Both readers take the raw JSON objects of the API (dicts) and raise ``PoolError`` naming the object and the field
that is wrong; the discovery source logs it and keeps what it had (``tritonmix.k8s.discovery``).

An EndpointSlice endpoint becomes one tritonmix endpoint per address, named ``namespace/pod`` (its ``targetRef``;
``namespace/slice/address`` without one). Its conditions map as the API defines them (an absent ``ready`` or
``serving`` means true, an absent ``terminating`` false)::

    terminating: true                        -> terminating (drains); ready = serving
    otherwise                                -> ready = ready
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Mapping, Optional

from ..errors import ConfigError
from ..fleet import CAPACITY_TYPES, EndpointSpec, parse_url
from . import labels

__all__ = ["PoolError", "PoolInfo", "pool_from_service", "endpoints_from_slice", "SliceEndpoint"]


class PoolError(ValueError):
    """A Service or EndpointSlice that cannot be read as a tritonmix pool; the message names the object and field."""


@dataclasses.dataclass(frozen=True)
class PoolInfo:
    """What a pool's Service says about every endpoint behind it."""

    service: str
    pool: str
    accelerator: str
    price_per_hour: float
    instance_type: str = ""
    capacity_type: str = "on-demand"
    max_rps: Optional[float] = None
    max_concurrency: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class SliceEndpoint:
    """One address of an EndpointSlice, with the ports the fleet's protocol and the metrics scrape need."""

    name: str
    url: str
    metrics_url: Optional[str]
    ready: bool
    terminating: bool

    def spec(self, pool: PoolInfo, protocol: str) -> EndpointSpec:
        return EndpointSpec(
            name=self.name, accelerator=pool.accelerator, price_per_hour=pool.price_per_hour, url=self.url,
            protocol=protocol, instance_type=pool.instance_type, capacity_type=pool.capacity_type,
            max_rps=pool.max_rps, max_concurrency=pool.max_concurrency, metrics_url=self.metrics_url, pool=pool.pool)


def pool_from_service(service: Mapping[str, Any]) -> PoolInfo:
    """The pool a Service describes; PoolError when an annotation the pool needs is missing or malformed."""
    meta = service.get("metadata") or {}
    name = meta.get("name") or "?"
    where = f"Service {meta.get('namespace', '?')}/{name}"
    notes = meta.get("annotations") or {}

    def text(key: str, required: bool) -> str:
        value = notes.get(key)
        if value is None:
            if required:
                raise PoolError(f"{where}: annotation {key} is missing")
            return ""
        if not isinstance(value, str) or not value.strip():
            raise PoolError(f"{where}: annotation {key}: {value!r} must be a non-empty string")
        return value.strip()

    def number(key: str, required: bool) -> Optional[float]:
        raw = text(key, required)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise PoolError(f"{where}: annotation {key}: {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise PoolError(f"{where}: annotation {key}: {raw!r} must be a finite number >= 0")
        return value

    price = number(labels.PRICE_ANNOTATION, required=True)
    capacity_type = text(labels.CAPACITY_TYPE_ANNOTATION, required=False) or "on-demand"
    if capacity_type not in CAPACITY_TYPES:
        raise PoolError(f"{where}: annotation {labels.CAPACITY_TYPE_ANNOTATION}: {capacity_type!r} is not one of "
                        f"{', '.join(CAPACITY_TYPES)}")
    max_rps = number(labels.MAX_RPS_ANNOTATION, required=False)
    if max_rps == 0:
        raise PoolError(f"{where}: annotation {labels.MAX_RPS_ANNOTATION}: must be > 0")
    concurrency = number(labels.MAX_CONCURRENCY_ANNOTATION, required=False)
    if concurrency is not None and (concurrency < 1 or concurrency != int(concurrency)):
        raise PoolError(f"{where}: annotation {labels.MAX_CONCURRENCY_ANNOTATION}: must be an integer >= 1")
    pool = (meta.get("labels") or {}).get(labels.POOL_LABEL) or name
    return PoolInfo(
        service=name, pool=str(pool), accelerator=text(labels.ACCELERATOR_ANNOTATION, required=True),
        price_per_hour=float(price or 0.0), instance_type=text(labels.INSTANCE_TYPE_ANNOTATION, required=False),
        capacity_type=capacity_type, max_rps=max_rps,
        max_concurrency=None if concurrency is None else int(concurrency))


def endpoints_from_slice(slice_: Mapping[str, Any], protocol: str) -> List[SliceEndpoint]:
    """The endpoints of one EndpointSlice, reached on its port named ``protocol`` (``http`` or ``grpc``).

    A null ``endpoints`` list is how the API writes an empty one: it yields no endpoints (the caller logs it).
    PoolError when the slice has no port of that name or an endpoint cannot be read."""
    meta = slice_.get("metadata") or {}
    namespace = meta.get("namespace") or "?"
    where = f"EndpointSlice {namespace}/{meta.get('name', '?')}"
    ports = {p.get("name"): p.get("port") for p in (slice_.get("ports") or []) if isinstance(p, Mapping)}
    port = ports.get(protocol)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise PoolError(f"{where}: no port named {protocol!r} (ports: {sorted(str(n) for n in ports)})")
    metrics_port = ports.get(labels.METRICS_PORT_NAME)
    raw = slice_.get("endpoints")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PoolError(f"{where}: 'endpoints' must be a list, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("addresses"), list) or not item["addresses"]:
            raise PoolError(f"{where}: endpoint {i} has no addresses")
        conditions = item.get("conditions") or {}
        terminating = conditions.get("terminating") is True
        ready = conditions.get("serving") is not False if terminating else conditions.get("ready") is not False
        target = item.get("targetRef") or {}
        for address in item["addresses"]:
            host = f"[{address}]" if ":" in str(address) else str(address)
            name = (f"{target.get('namespace') or namespace}/{target['name']}" if target.get("name")
                    else f"{namespace}/{meta.get('name', '?')}/{address}")
            if len(item["addresses"]) > 1:
                name = f"{name}/{address}"
            url = f"{host}:{port}"
            try:
                parse_url(url, f"{where}: endpoint {i}: address")
            except ConfigError as exc:
                raise PoolError(str(exc)) from None
            metrics = f"{host}:{metrics_port}" if isinstance(metrics_port, int) else None
            out.append(SliceEndpoint(name=name, url=url, metrics_url=metrics, ready=ready, terminating=terminating))
    return out
