"""The manifests of one pool of the fleet: ``Pool`` (what every replica shares) and its three objects, a
Deployment of Triton, a Service and a KEDA ScaledObject, as plain mappings (``yaml.safe_dump`` writes them).

The ScaledObject's trigger reads the control plane's figure for the pool::

    query      max(tritonmix_plane_desired_replicas{pool="<pool>"})     (max: both plane replicas export it)
    metricType AverageValue, threshold "1"

KEDA hands the query's value to the HPA as an external metric; for an AverageValue target the HPA divides it by the
current replicas R and compares with the threshold, so its proposal is ceil(R x (value / R) / 1) = ceil(value) =
the plane's figure (an integer), clamped to [minReplicaCount, maxReplicaCount]. The HPA leaves R alone while
|value / R - 1| <= its tolerance (0.1 by default): exact for R < 10, within 10% beyond (docs/kubernetes.md).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError
from . import labels as L
from .values import RenderValues

__all__ = ["Pool", "pools_of", "object_name", "pool_objects", "scaling_query", "TRITON_PORTS", "MODELS_MOUNT"]

TRITON_PORTS = {L.HTTP_PORT_NAME: 8000, L.GRPC_PORT_NAME: 8001, L.METRICS_PORT_NAME: 8002}
MODELS_MOUNT = "/models"
#: Karpenter's well-known labels; node.kubernetes.io/instance-type is Kubernetes' own
NODEPOOL_LABEL = "karpenter.sh/nodepool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
APP_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclasses.dataclass(frozen=True)
class Pool:
    """The shared spec of a pool's endpoints (the fleet file lists them one by one; here they are replicas)."""

    name: str
    accelerator: str
    instance_type: str
    capacity_type: str
    price_per_hour: float
    protocol: str
    max_rps: Optional[float]
    max_concurrency: Optional[int]
    #: endpoints the fleet file lists for the pool
    listed: int


_SHARED = ("accelerator", "instance_type", "capacity_type", "price_per_hour", "protocol", "max_rps", "max_concurrency")


def pools_of(fleet: Any) -> List[Pool]:
    """The fleet's pools in first-seen order; every endpoint of a pool must agree on the fields replicas share."""
    grouped: Dict[str, List[Any]] = {}
    for endpoint in fleet.endpoints:
        grouped.setdefault(endpoint.pool_name, []).append(endpoint)
    pools = []
    for name, endpoints in grouped.items():
        first = endpoints[0]
        for field in _SHARED:
            other = next((e for e in endpoints if getattr(e, field) != getattr(first, field)), None)
            if other is not None:
                raise ConfigError(f"render: pool '{name}': endpoints '{first.name}' and '{other.name}' differ in "
                                  f"'{field}' ({getattr(first, field)!r} vs {getattr(other, field)!r}); the "
                                  "replicas of one Deployment share it (give them different 'pool' names)")
        if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", name):
            raise ConfigError(f"render: pool {name!r} is not a Kubernetes label value (1-63 letters, digits, '-', "
                              "'_', '.'): rename it with the endpoints' 'pool' field")
        pools.append(Pool(name, first.accelerator, first.instance_type, first.capacity_type, first.price_per_hour,
                          first.protocol, first.max_rps, first.max_concurrency, len(endpoints)))
    return pools


def object_name(fleet_name: str, pool: str) -> str:
    """``<fleet>-<pool>`` as a DNS-1035 label (Service names): lowercase, other characters to '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{fleet_name}-{pool}".lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha() or len(name) > 63:
        raise ConfigError(f"render: the objects of pool '{pool}' would be named {name!r}: a Service name must be "
                          "1-63 characters starting with a letter (shorten --fleet-name or the pool)")
    return name


def scaling_query(pool: str, selector: str = "") -> str:
    """The PromQL each ScaledObject runs: the plane's desired replicas for ``pool`` (module docstring)."""
    extra = f",{selector.strip()}" if selector.strip() else ""
    return f'max(tritonmix_plane_desired_replicas{{pool="{pool}"{extra}}})'


def _labels(values: RenderValues, pool: Pool) -> Dict[str, str]:
    return {APP_LABEL: "triton", COMPONENT_LABEL: "pool", L.FLEET_LABEL: values.fleet_name, L.POOL_LABEL: pool.name}


def _meta(name: str, values: RenderValues, labels: Dict[str, str], **extra: Any) -> Dict[str, Any]:
    return {"name": name, "namespace": values.namespace, "labels": dict(labels), **extra}


def _annotations(pool: Pool) -> Dict[str, str]:
    out = {L.ACCELERATOR_ANNOTATION: pool.accelerator, L.PRICE_ANNOTATION: repr(float(pool.price_per_hour)),
           L.CAPACITY_TYPE_ANNOTATION: pool.capacity_type}
    if pool.instance_type:
        out[L.INSTANCE_TYPE_ANNOTATION] = pool.instance_type
    if pool.max_rps is not None:
        out[L.MAX_RPS_ANNOTATION] = repr(float(pool.max_rps))
    if pool.max_concurrency is not None:
        out[L.MAX_CONCURRENCY_ANNOTATION] = str(pool.max_concurrency)
    return out


def _node_selector(values: RenderValues, pool: Pool) -> Dict[str, str]:
    """A Karpenter NodePool when given, else the pool's instance type; spot pools add Karpenter's capacity type."""
    node_pool = values.for_pool("node_pool", pool.name)
    if node_pool:
        selector = {NODEPOOL_LABEL: str(node_pool)}
        if pool.instance_type:
            selector[INSTANCE_TYPE_LABEL] = pool.instance_type
    elif pool.instance_type:
        selector = {INSTANCE_TYPE_LABEL: pool.instance_type}
    else:
        raise ConfigError(f"render: pool '{pool.name}' has no instance_type in the fleet file and no node pool: "
                          f"set --node-pool {pool.name}=NODEPOOL (Karpenter) or the endpoints' instance_type")
    if pool.capacity_type == "spot":
        selector[CAPACITY_TYPE_LABEL] = "spot"
    return selector


def _triton_container(values: RenderValues, pool: Pool, repository: str) -> Dict[str, Any]:
    resource = values.resource(pool.name, pool.accelerator)
    args = ["tritonserver", f"--model-repository={repository}", f"--http-port={TRITON_PORTS['http']}",
            f"--grpc-port={TRITON_PORTS['grpc']}", f"--metrics-port={TRITON_PORTS['metrics']}",
            f"--exit-timeout-secs={values.exit_timeout_s}"]
    container: Dict[str, Any] = {
        "name": "triton", "image": values.triton_image, "args": args,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in TRITON_PORTS.items()],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": L.HTTP_PORT_NAME},
                           "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": L.HTTP_PORT_NAME},
                          "periodSeconds": 10, "failureThreshold": 3},
        # loading a model repository can take minutes: liveness starts once the server is up
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": L.HTTP_PORT_NAME},
                         "periodSeconds": 10, "failureThreshold": 60},
        # the drain: the pod is terminating (its EndpointSlice entry says so, the plane and the clients stop
        # sending) while Triton still serves what is in flight; then SIGTERM, and Triton's own exit timeout
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(values.drain_s)]}}},
    }
    if resource is not None:
        container["resources"] = {"limits": {resource[0]: resource[1]}, "requests": {resource[0]: resource[1]}}
    if repository.startswith("pvc://"):
        container["volumeMounts"] = [{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}]
    return container


def _pod_spec(values: RenderValues, pool: Pool) -> Dict[str, Any]:
    uri = values.repository(pool.name, pool.accelerator)
    repository = uri
    volumes = []
    if uri.startswith("pvc://"):
        claim, _, sub = uri[len("pvc://"):].partition("/")
        repository = f"{MODELS_MOUNT}/{sub}".rstrip("/")
        volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
    spec: Dict[str, Any] = {
        "terminationGracePeriodSeconds": values.drain_s + values.exit_timeout_s + 5,
        "nodeSelector": _node_selector(values, pool),
        "containers": [_triton_container(values, pool, repository)],
    }
    resource = values.resource(pool.name, pool.accelerator)
    if resource is not None:  # accelerator nodes are commonly tainted with their resource name
        spec["tolerations"] = [{"key": resource[0], "operator": "Exists", "effect": "NoSchedule"}]
    if volumes:
        spec["volumes"] = volumes
    if values.triton_service_account:
        spec["serviceAccountName"] = values.triton_service_account
    return spec


def pool_objects(values: RenderValues, pool: Pool) -> Sequence[Dict[str, Any]]:
    """(Deployment, Service, ScaledObject) of ``pool``. The Deployment has no ``replicas``: KEDA's HPA owns the
    count, and a re-apply would otherwise reset it."""
    name = object_name(values.fleet_name, pool.name)
    labels = _labels(values, pool)
    selector = {L.FLEET_LABEL: values.fleet_name, L.POOL_LABEL: pool.name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, values, labels, annotations=_annotations(pool)),
        "spec": {"selector": {"matchLabels": selector},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": labels}, "spec": _pod_spec(values, pool)}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(name, values, labels, annotations=_annotations(pool)),
        "spec": {"selector": selector,
                 "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in TRITON_PORTS.items()]},
    }
    low, high = values.replicas(pool.name)
    scaled = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": _meta(name, values, labels),
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": values.polling_interval_s,
            "minReplicaCount": low, "maxReplicaCount": high,
            "triggers": [{
                "type": "prometheus", "metricType": "AverageValue",
                "metadata": {"serverAddress": values.prometheus_url,
                             "query": scaling_query(pool.name, values.metric_selector),
                             "threshold": "1",
                             # a lost plane is an error (the HPA holds its count), not a zero (scale to min)
                             "ignoreNullValues": "false"},
            }],
        },
    }
    return deployment, service, scaled
