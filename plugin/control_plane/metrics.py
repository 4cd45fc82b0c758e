"""The plane's Prometheus series, in the same registry as its controller's (one registry, one ``/metrics``).

    tritonmix_plane_plan_generation               the newest plan's generation
    tritonmix_plane_leader                        1 while this replica leads (scrapes), 0 while it stands by
    tritonmix_plane_clients                       clients heard from within the expiry (3 intervals)
    tritonmix_plane_reports_total                 reports merged (rate(): reports per second)
    tritonmix_plane_refused_total{reason}         requests refused: token, malformed, size
    tritonmix_plane_plans_served_total            plans answered to syncs and watchers
    tritonmix_plane_client_plan_age_seconds{stat} the age of the plan in force at the clients, as they last
                                                  reported it: mean and max over live clients
    tritonmix_plane_desired_replicas{pool}        ceil(fleet-wide load on the pool / (target utilisation x mu per
                                                  replica)): the one value an autoscaler should read (KEDA's
                                                  Prometheus trigger)
    tritonmix_plane_scrapes_total{endpoint}       Triton metrics scrapes of each endpoint by this replica
    tritonmix_plane_ticks_total                   ticks run
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["PlaneCollector", "plane_registry"]


class PlaneCollector(Collector):
    def __init__(self, plane: Any) -> None:
        self._plane = plane

    def collect(self) -> Iterator[Any]:
        p = self._plane
        plan = p.controller.plan
        yield GaugeMetricFamily("tritonmix_plane_plan_generation", "newest plan's generation",
                                value=float(plan.generation if plan else 0))
        yield GaugeMetricFamily("tritonmix_plane_leader", "1 while this replica leads", value=float(p.role == "leader"))
        rows = p.board.clients()
        yield GaugeMetricFamily("tritonmix_plane_clients", "clients heard from recently", value=float(len(rows)))
        yield CounterMetricFamily("tritonmix_plane_reports", "reports merged", value=float(p.board.reports))
        refused = CounterMetricFamily("tritonmix_plane_refused", "requests refused", labels=["reason"])
        for reason in ("token", "malformed", "size"):
            refused.add_metric([reason], float(p.refused.get(reason, 0)))
        yield refused
        yield CounterMetricFamily("tritonmix_plane_plans_served", "plans answered", value=float(p.served))
        ages = [r.plan_age_s for r in rows if r.plan_age_s >= 0]
        age = GaugeMetricFamily("tritonmix_plane_client_plan_age_seconds", "plan age at clients", labels=["stat"])
        age.add_metric(["mean"], sum(ages) / len(ages) if ages else 0.0)
        age.add_metric(["max"], max(ages, default=0.0))
        yield age
        snap = p.controller.snapshot()
        replicas = GaugeMetricFamily("tritonmix_plane_desired_replicas", "fleet-wide desired replicas per pool",
                                     labels=["pool"])
        for pool, count in sorted((snap.desired_replicas if snap else {}).items()):
            replicas.add_metric([pool], float(count))
        yield replicas
        scrapes = p.source.scrapes
        family = CounterMetricFamily("tritonmix_plane_scrapes", "Triton metrics scrapes", labels=["endpoint"])
        if scrapes is not None:
            for name, count in zip(p.board.slot_names(), scrapes):
                if name is not None:  # a vacant slot: its endpoint left
                    family.add_metric([name], float(count))
        yield family
        yield CounterMetricFamily("tritonmix_plane_ticks", "ticks run", value=float(p.ticks))


def plane_registry(plane: Any) -> CollectorRegistry:
    """The controller's registry with the plane's collector added."""
    registry = plane.controller.registry
    registry.register(PlaneCollector(plane))
    return registry
