"""What the gateway's Envoy saw, as a control-plane report: the gateway is one client of the plane, and Envoy's
per-host counters (admin ``/clusters?format=json``) stand in for a tritonmix router's.

    per endpoint (summed over every cluster):  ok = rq_success, failed = rq_error, over_slo = 0 (Envoy keeps no
                                               per-host latency figure; the plane takes latency from Triton)
    per HTTP model cluster (key model/interactive): arrivals = sum of rq_total, successes, failures, in flight =
                                               rq_active per host; latency unknown (null)
    the default clusters (HTTP paths of models without a cluster, all of gRPC): counted per endpoint, and under
                                               the fleet's model when it serves exactly one
    ejected: hosts Envoy's outlier detection holds out now (``failed_outlier_check``)
    a capped model (``config``: limits enforced by an inner hop): its inner clusters (one per endpoint) stand for
                                               its cluster: they count the requests that reached a server, while
                                               the model's cluster also counts the attempts a full endpoint
                                               refused (503s that ran nothing) and their retries

Envoy's host counters are cumulative and the gateway never removes a host or a cluster while it runs (an endpoint
the plan takes out stays, marked UNHEALTHY), so they keep growing as the report format wants; the plane reads a
counter that went down (an Envoy restart) as counting from 0.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .config import cluster_name

__all__ = ["HostCounts", "host_counts", "report_body"]

_FIELDS = ("rq_success", "rq_error", "rq_active", "rq_total")


class HostCounts:
    """Per cluster and endpoint index: the ``_FIELDS`` counters, and which endpoints outlier detection ejected."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.clusters: Dict[str, Dict[str, List[int]]] = {}
        self.ejected = [False] * n
        self.unhealthy = [False] * n

    def of(self, cluster: str) -> Dict[str, List[int]]:
        return self.clusters.get(cluster) or {f: [0] * self.n for f in _FIELDS}


def host_counts(clusters_json: Mapping[str, Any], names: Sequence[str]) -> HostCounts:
    """Parse admin ``/clusters?format=json`` (hosts are named by ``hostname``: the fleet's endpoint name)."""
    index = {name: i for i, name in enumerate(names)}
    out = HostCounts(len(names))
    for cluster in clusters_json.get("cluster_statuses", []):
        table = {f: [0] * len(names) for f in _FIELDS}
        for host in cluster.get("host_statuses", []):
            i = index.get(host.get("hostname", ""))
            if i is None:
                continue
            for stat in host.get("stats", []):
                if stat.get("name") in table:
                    table[stat["name"]][i] = int(stat.get("value", 0) or 0)
            health = host.get("health_status", {})
            if health.get("failed_outlier_check"):
                out.ejected[i] = True
            if health.get("failed_active_health_check") or health.get("eds_health_status") == "UNHEALTHY":
                out.unhealthy[i] = True
        out.clusters[cluster.get("name", "")] = table
    return out


def report_body(counts: HostCounts, names: Sequence[str], models: Sequence[str], client: str, fingerprint: str,
                seq: int, plan_age_s: float, only_model: Optional[str],
                inner: Optional[Mapping[str, Sequence[str]]] = None) -> bytes:
    """A whole report (``control_plane.report`` wire format) from ``counts``; ``inner``: per capped model, its
    inner clusters (module docstring)."""
    n = len(names)
    inner = inner or {}
    outer = {cluster_name("http", m) for m in inner}
    ok, failed = [0] * n, [0] * n
    for name, table in counts.clusters.items():
        if name in outer:
            continue
        for i in range(n):
            ok[i] += table["rq_success"][i]
            failed[i] += table["rq_error"][i]
    keys: Dict[str, Dict[str, Any]] = {}
    for model in models:
        for name in inner.get(model) or (cluster_name("http", model),):
            _add(keys, model, counts.of(name))
    if only_model is not None:
        for protocol in ("http", "grpc"):
            _add(keys, only_model, counts.of(cluster_name(protocol, None)))
    body = {"v": 1, "client": client, "fleet": fingerprint, "seq": seq,
            "plan_age_s": plan_age_s if math.isfinite(plan_age_s) else -1.0,
            "endpoint": {"ok": ok, "over_slo": [0] * n, "failed": failed},
            "keys": list(keys.values()),
            "ejected": [names[i] for i in range(n) if counts.ejected[i]]}
    return json.dumps(body, separators=(",", ":")).encode()


def _add(keys: Dict[str, Dict[str, Any]], model: str, table: Mapping[str, List[int]]) -> None:
    key = keys.setdefault(model, {"model": model, "class": "interactive", "arrivals": 0,
                                  "successes": [0] * len(table["rq_total"]),
                                  "failures": [0] * len(table["rq_total"]),
                                  "in_flight": [0] * len(table["rq_total"]),
                                  "latency_s": [None] * len(table["rq_total"])})
    key["arrivals"] += sum(table["rq_total"])
    for dst, src in (("successes", "rq_success"), ("failures", "rq_error"), ("in_flight", "rq_active")):
        key[dst] = [a + b for a, b in zip(key[dst], table[src])]
