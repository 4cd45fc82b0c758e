"""The control plane's manifests: a StatefulSet of two replicas behind a headless Service, its ServiceAccount, a Role
that grants only what discovery reads, a RoleBinding, a PodDisruptionBudget, the fleet file as a ConfigMap, and the
NetworkPolicies of the plane and of the Triton pods.

Why a StatefulSet and not a Deployment: the plane's replicas elect by list order (``ControlPlane``: a replica leads
while no replica listed before it answers /v1/health), so every replica, and every client, needs the same ordered list
of stable addresses. A StatefulSet's pods have stable names (``<name>-0``, ``<name>-1``) and, through a headless
Service, stable DNS names ``<name>-<k>.<name>.<namespace>.svc``; a Deployment's pods get new names and addresses on
every restart. Each replica listens on every address of its pod and advertises its DNS name (``--advertise``: the
plane recognises itself in the list by it), so it starts without waiting for its name to resolve; the headless
Service publishes not-ready addresses, so that a starting replica can reach the ones listed before it.

RBAC: discovery lists and watches EndpointSlices (discovery.k8s.io) and Services in the namespace: get, list, watch
on those two, nothing else. The plane elects without Leases, so it is granted none.
"""
from __future__ import annotations

from typing import Any, Dict, List

from .manifests import APP_LABEL, COMPONENT_LABEL, TRITON_PORTS, object_name
from . import labels as L
from .values import RenderValues

__all__ = ["PLANE_NAME", "FLEET_CONFIG_PATH", "plane_objects", "replica_addresses", "PLANE_REPLICAS"]

PLANE_NAME = "tritonmix-control-plane"
PLANE_REPLICAS = 2
FLEET_CONFIG_PATH = "/etc/tritonmix/fleet.yaml"


def _labels(values: RenderValues) -> Dict[str, str]:
    return {APP_LABEL: "tritonmix", COMPONENT_LABEL: "control-plane", L.FLEET_LABEL: values.fleet_name}


def _meta(values: RenderValues, name: str = PLANE_NAME, **extra: Any) -> Dict[str, Any]:
    return {"name": name, "namespace": values.namespace, "labels": _labels(values), **extra}


def replica_addresses(values: RenderValues) -> List[str]:
    """The replicas' stable addresses in election order: what clients list as ``control_plane:``."""
    return [f"{PLANE_NAME}-{k}.{PLANE_NAME}.{values.namespace}.svc:{values.plane_port}" for k in range(PLANE_REPLICAS)]


def _container(values: RenderValues) -> Dict[str, Any]:
    replicas = " ".join(f"--replica {a}" for a in replica_addresses(values))
    script = (f'exec tritonmix control-plane --fleet {FLEET_CONFIG_PATH} --listen "0.0.0.0:{values.plane_port}" '
              f'--advertise "$PLANE_HOST:{values.plane_port}" {replicas}')
    probe = {"httpGet": {"path": "/v1/health", "port": "http"}, "periodSeconds": 5}
    return {
        "name": "control-plane", "image": values.plane_image, "command": ["sh", "-c", script],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PLANE_HOST", "value": f"$(POD_NAME).{PLANE_NAME}.{values.namespace}.svc"},
            # a plane beyond loopback needs a bearer token: from a Secret the user creates (never rendered)
            {"name": "TRITONMIX_CONTROL_PLANE_TOKEN",
             "valueFrom": {"secretKeyRef": {"name": values.plane_token_secret, "key": "token"}}},
        ],
        "ports": [{"name": "http", "containerPort": values.plane_port, "protocol": "TCP"},
                  {"name": "load", "containerPort": values.plane_port, "protocol": "UDP"}],
        "readinessProbe": dict(probe, failureThreshold=2),
        "livenessProbe": dict(probe, periodSeconds=10, failureThreshold=6, initialDelaySeconds=10),
        "volumeMounts": [{"name": "fleet", "mountPath": "/etc/tritonmix", "readOnly": True}],
    }


def _statefulset(values: RenderValues) -> Dict[str, Any]:
    labels = _labels(values)
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(values),
        "spec": {
            "serviceName": PLANE_NAME, "replicas": PLANE_REPLICAS, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             # the common scrape convention (Prometheus' kubernetes-pods job); with the Prometheus
                             # Operator, a PodMonitor on these labels instead
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                             "prometheus.io/port": str(values.plane_port)}},
                "spec": {
                    "serviceAccountName": PLANE_NAME,
                    "terminationGracePeriodSeconds": 10,
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": labels},
                                                           "topologyKey": "kubernetes.io/hostname"}}]}},
                    "containers": [_container(values)],
                    "volumes": [{"name": "fleet", "configMap": {"name": f"{PLANE_NAME}-fleet"}}],
                },
            },
        },
    }


def _plane_ports(values: RenderValues, protocols: tuple = ("TCP", "UDP")) -> List[Dict[str, Any]]:
    return [{"protocol": p, "port": values.plane_port} for p in protocols]


def _network_policies(values: RenderValues) -> List[Dict[str, Any]]:
    clients = {"podSelector": {"matchLabels": dict(values.client_labels)}}
    plane = {"podSelector": {"matchLabels": _labels(values)}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": values.prometheus_namespace}}}
    plane_policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(values),
        "spec": {"podSelector": {"matchLabels": _labels(values)}, "policyTypes": ["Ingress"], "ingress": [
            {"from": [clients, plane], "ports": _plane_ports(values)},       # reports, plans, load channel, peers
            {"from": [prometheus], "ports": _plane_ports(values, ("TCP",))},  # /metrics
        ]},
    }
    triton = {APP_LABEL: "triton", L.FLEET_LABEL: values.fleet_name}
    serving = [{"protocol": "TCP", "port": TRITON_PORTS[n]} for n in (L.HTTP_PORT_NAME, L.GRPC_PORT_NAME)]
    metrics = [{"protocol": "TCP", "port": TRITON_PORTS[L.METRICS_PORT_NAME]}]
    triton_policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(values, object_name(values.fleet_name, "triton-pools")),
        "spec": {"podSelector": {"matchLabels": triton}, "policyTypes": ["Ingress"], "ingress": [
            {"from": [clients, plane], "ports": serving + metrics},    # requests; the plane's probes and scrapes
            {"from": [prometheus], "ports": metrics},
        ]},
    }
    return [plane_policy, triton_policy]


def plane_objects(values: RenderValues, fleet_text: str) -> Dict[str, Dict[str, Any]]:
    """File stem -> object, for the plane and the NetworkPolicies; ``fleet_text`` is the fleet file it reads."""
    name = PLANE_NAME
    policies = _network_policies(values)
    return {
        "plane-serviceaccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(values)},
        "plane-role": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(values),
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["get", "list", "watch"]},
                      {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}],
        },
        "plane-rolebinding": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(values),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": values.namespace}],
        },
        "plane-configmap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(values, f"{name}-fleet"),
                            "data": {"fleet.yaml": fleet_text}},
        "plane-service": {
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(values),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": _labels(values),
                     "ports": [{"name": "http", "port": values.plane_port, "targetPort": "http", "protocol": "TCP"},
                               {"name": "load", "port": values.plane_port, "targetPort": "load", "protocol": "UDP"}]},
        },
        "plane-statefulset": _statefulset(values),
        "plane-pdb": {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(values),
                      "spec": {"minAvailable": 1, "selector": {"matchLabels": _labels(values)}}},
        "plane-networkpolicy": policies[0],
        "triton-networkpolicy": policies[1],
    }
