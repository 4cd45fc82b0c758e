"""Prometheus metrics of one controller, in its own ``CollectorRegistry`` (many clients in one process never
collide), and the optional ``/metrics`` HTTP exporter.

The collector reads the controller's last snapshot when scraped, so a tick pays nothing for the export.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .model import MODES
from .snapshot import ControllerSnapshot

__all__ = ["ControllerCollector", "new_registry", "start_exporter"]


class ControllerCollector(Collector):
    """Families (labels): tritonmix_weight (endpoint, request_class), tritonmix_mode (mode; 1 for the one in force),
    tritonmix_panic, tritonmix_in_flight, tritonmix_capacity_rps, tritonmix_cost_per_inference_usd,
    tritonmix_attributed_cost_per_hour_usd, tritonmix_endpoint_healthy (endpoint; capacity and cost of the busiest
    model), tritonmix_model_capacity_rps (endpoint, model), tritonmix_demand_rps
    (model, request_class), tritonmix_desired_replicas and tritonmix_pool_demand_rps (pool),
    tritonmix_decisions_total."""

    def __init__(self, snapshot: Callable[[], Optional[ControllerSnapshot]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        if snap is None:
            return
        weight = GaugeMetricFamily("tritonmix_weight", "dispatcher weight (share of traffic)",
                                   labels=["endpoint", "request_class"])
        mode = GaugeMetricFamily("tritonmix_mode", "routing mode in force (1) per mode", labels=["mode"])
        for m in MODES[:2]:
            mode.add_metric([m], 1.0 if snap.mode == m else 0.0)
        yield mode
        yield GaugeMetricFamily("tritonmix_panic", "1 while in panic mode", value=float(snap.panic))
        per_endpoint = _endpoint_families()
        for row in snap.endpoints:
            weight.add_metric([row.name, "interactive"], row.interactive_weight)
            weight.add_metric([row.name, "batch"], row.batch_weight)
            for family, attr in per_endpoint:
                family.add_metric([row.name], float(getattr(row, attr)))
        yield weight
        yield from (family for family, _ in per_endpoint)
        by_model = GaugeMetricFamily("tritonmix_model_capacity_rps", "capacity estimate mu per (endpoint, model)",
                                     labels=["endpoint", "model"])
        for (endpoint, model), mu in sorted(snap.capacity_rps.items()):
            by_model.add_metric([endpoint, model], mu)
        yield by_model
        yield from _demand_families(snap)
        yield CounterMetricFamily("tritonmix_decisions", "decisions logged", value=snap.decisions_total)


def _endpoint_families() -> Tuple[Tuple[GaugeMetricFamily, str], ...]:
    spec = (("tritonmix_in_flight", "requests of this client in flight", "in_flight"),
            ("tritonmix_capacity_rps", "capacity estimate mu within the SLO, requests/s", "mu_rps"),
            ("tritonmix_cost_per_inference_usd", "c = price_per_hour / 3600 / (C / s)", "cost_per_inference"),
            ("tritonmix_attributed_cost_per_hour_usd", "price_per_hour x assigned / mu", "attributed_cost_per_hour"),
            ("tritonmix_assigned_rps", "load this client assigns, requests/s", "assigned_rps"),
            ("tritonmix_endpoint_healthy", "1 when ready and not ejected", "healthy"))
    return tuple((GaugeMetricFamily(name, doc, labels=["endpoint"]), attr) for name, doc, attr in spec)


def _demand_families(snap: ControllerSnapshot) -> Iterator[GaugeMetricFamily]:
    demand = GaugeMetricFamily("tritonmix_demand_rps", "arrival rate lambda", labels=["model", "request_class"])
    for (model, rc), lam in sorted(snap.demand_rps.items()):
        demand.add_metric([model, rc], lam)
    yield demand
    replicas = GaugeMetricFamily("tritonmix_desired_replicas", "ceil(lambda_pool / (target_utilisation x mu))",
                                 labels=["pool"])
    pool_demand = GaugeMetricFamily("tritonmix_pool_demand_rps", "load assigned to the pool", labels=["pool"])
    for pool in sorted(snap.desired_replicas):
        replicas.add_metric([pool], float(snap.desired_replicas[pool]))
        pool_demand.add_metric([pool], snap.pool_demand_rps.get(pool, 0.0))
    yield replicas
    yield pool_demand


def new_registry(snapshot: Callable[[], Optional[ControllerSnapshot]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(snapshot))
    return registry


def start_exporter(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``registry`` on http://host:port/metrics in a daemon thread; returns the server (``.shutdown()``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
