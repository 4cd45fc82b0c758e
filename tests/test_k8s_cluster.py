"""Render -> apply -> wait -> discover -> scale -> delete (``tritonmix.k8s.cluster``), through the official client.

On every run: against the local API server (``FakeApiServer``: server-side apply, namespaces, API groups), with this
test standing in for the Deployment controller and for KEDA (it writes each Deployment's ready replicas and its
Service's EndpointSlice, and KEDA's HPA where a ScaledObject was applied). With ``pytest -m k8s`` and KUBECONFIG set:
the same check on a real cluster, in a namespace of its own that it deletes (see docs/kubernetes.md).
"""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import yaml

pytest.importorskip("kubernetes")

from tritonmix.k8s import labels  # noqa: E402
from tritonmix.k8s.cluster import CheckFailed, ClusterCheck, resource_path, run_check  # noqa: E402
from tritonmix.k8s.discovery import KubernetesSource  # noqa: E402
from tritonmix.k8s.fakeapi import FakeApiServer  # noqa: E402
from tritonmix.k8s.fakeobjects import SliceAddress, endpoint_slice  # noqa: E402
from tritonmix.k8s.fakewrites import BUILTIN_GROUPS, merge_patch  # noqa: E402
from tritonmix.k8s.render import render  # noqa: E402
from tritonmix.k8s.settings import KubernetesSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fleet-k8s.yaml"
VALUES: Dict[str, Any] = {
    "triton_image": "nvcr.io/nvidia/tritonserver:24.08-py3", "model_repository": "s3://models/sd/{accelerator}",
    "plane_image": "registry.example/tritonmix:0.1", "prometheus_url": "http://prometheus-server.monitoring.svc:9090",
    "prometheus_namespace": "monitoring", "max_replicas": {"*": 8, "cpu": 2},
}


class FakeCluster:
    """Plays the Deployment controller (ready replicas = spec.replicas, default 1, and that many ready addresses in
    the Service's EndpointSlice) and, where a ScaledObject exists, KEDA (its HPA keda-hpa-<name>), every 50 ms."""

    def __init__(self, api: FakeApiServer, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FakeCluster":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for d in self.api.objects("Deployment", self.namespace):
                want, name = d.get("spec", {}).get("replicas", 1), d["metadata"]["name"]
                if (d.get("status") or {}).get("readyReplicas") != want:
                    self.api.apply(dict(d, status={"replicas": want, "readyReplicas": want}))
                    pods = [SliceAddress(f"{name}-{k}", f"10.77.{len(name) % 200}.{k + 1}") for k in range(want)]
                    self.api.apply(endpoint_slice(self.namespace, f"{name}-abcde", name, pods))
            for s in self.api.objects("ScaledObject", self.namespace):
                hpa = f"keda-hpa-{s['metadata']['name']}"
                if self.api.get("HorizontalPodAutoscaler", self.namespace, hpa) is None:
                    self.api.apply({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                    "metadata": {"name": hpa, "namespace": self.namespace}})


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(token="t0ken", groups=BUILTIN_GROUPS) as api:
        yield api


def _fleet_label(out_dir: Path) -> str:
    services = [d for p in sorted(out_dir.glob("*-service.yaml")) for d in [yaml.safe_load(p.read_text())]]
    return services[0]["metadata"]["labels"][labels.FLEET_LABEL]


def _check_on(api_client: Any, kubeconfig: str, namespace: str, out_dir: Path, timeout_s: float):
    check = ClusterCheck(api_client, namespace)
    check.create_namespace()
    try:
        settings = KubernetesSettings(namespace=namespace, fleet=_fleet_label(out_dir), in_cluster=False,
                                      kubeconfig=kubeconfig)
        return run_check(check, out_dir, lambda: KubernetesSource(settings), timeout_s=timeout_s)
    finally:
        check.delete_namespace()


def _api_client(kubeconfig: str) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig)


@pytest.mark.parametrize("keda", [False, True], ids=["no-keda", "keda"])
def test_render_apply_discover_scale_and_delete_through_the_client(fake_api: FakeApiServer, tmp_path: Path,
                                                                   keda: bool) -> None:
    if keda:
        fake_api.writes.groups.add("keda.sh/v1alpha1")
    namespace = f"tritonmix-check-{uuid.uuid4().hex[:6]}"
    out = render(EXAMPLE, tmp_path / "out", namespace=namespace, **VALUES)
    kubeconfig = str(fake_api.kubeconfig_path())
    with FakeCluster(fake_api, namespace):
        report = _check_on(_api_client(kubeconfig), kubeconfig, namespace, out.out_dir, timeout_s=20.0)
    assert set(report.pools) == set(out.names) and len(report.pools) == 5
    kinds = {label.split("/")[0] for label in report.applied}
    assert {"Deployment", "Service", "StatefulSet", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    if keda:
        assert "ScaledObject" in kinds and not report.skipped and "keda hpa" in report.seconds
    else:
        assert "ScaledObject" not in kinds and len(report.skipped) == 5
        assert all("KEDA is not installed" in s for s in report.skipped) and "scaled" in report.seconds
        # "scaled": discovery saw 2 ready endpoints of the first pool, which the stand-in controller wrote only
        # after the merge patch set the Deployment's replicas to 2 through the API
    assert fake_api.writes.namespaces == {"default"}  # the run's namespace is gone, and every object in it
    assert fake_api.objects("Deployment", namespace) == [] and fake_api.objects("Service", namespace) == []


def test_a_step_that_does_not_finish_fails_naming_it(fake_api: FakeApiServer, tmp_path: Path) -> None:
    """No controller: the Deployments never report a ready replica; the check fails naming the step, and the
    namespace is deleted all the same."""
    namespace = "tritonmix-check-stuck"
    out = render(EXAMPLE, tmp_path / "out", namespace=namespace, **VALUES)
    kubeconfig = str(fake_api.kubeconfig_path())
    with pytest.raises(CheckFailed, match="every pool's Service and a ready Deployment: not done after 1 s"):
        _check_on(_api_client(kubeconfig), kubeconfig, namespace, out.out_dir, timeout_s=1.0)
    assert namespace not in fake_api.writes.namespaces and fake_api.objects("Deployment", namespace) == []


def test_the_api_servers_refusal_is_named(fake_api: FakeApiServer) -> None:
    check = ClusterCheck(_api_client(str(fake_api.kubeconfig_path())), "nowhere")
    with pytest.raises(CheckFailed, match=r"PATCH /apis/apps/v1/namespaces/nowhere/deployments/x: 404"):
        check.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})
    assert check.get("Deployment", "apps/v1", "x") is None


def test_paths_and_merge_patch() -> None:
    assert resource_path("v1", "Service", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert resource_path("networking.k8s.io/v1", "NetworkPolicy", "ns") == \
        "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
    assert resource_path("policy/v1", "PodDisruptionBudget", "ns", "p") == \
        "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/p"
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5, "c": None}}) == {"a": {"b": 5}, "d": 3}


# -- a real cluster: pytest -m k8s ------------------------------------------------------------------------------
@pytest.mark.k8s
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no KUBECONFIG: the real-cluster check needs one")
def test_on_a_real_cluster_render_apply_discover_scale_and_delete(tmp_path: Path) -> None:
    """The check above on the cluster KUBECONFIG names, in a namespace of its own (deleted at the end). The fleet
    ($TRITONMIX_K8S_FLEET, default the example) must have pools whose pods can run there; the render values come
    from $TRITONMIX_K8S_VALUES (a YAML file; the namespace is the run's); $TRITONMIX_K8S_TIMEOUT_S per step
    (default 600). Without KEDA the first pool is scaled to 2 by a patch; with it, KEDA's HPAs must appear."""
    values_file = os.environ.get("TRITONMIX_K8S_VALUES")
    if not values_file:
        pytest.skip("TRITONMIX_K8S_VALUES (a YAML file of render values for this cluster) is not set")
    values = dict(yaml.safe_load(Path(values_file).read_text()))
    namespace = f"tritonmix-check-{uuid.uuid4().hex[:8]}"
    values["namespace"] = namespace
    out = render(os.environ.get("TRITONMIX_K8S_FLEET", str(EXAMPLE)), tmp_path / "out", **values)
    kubeconfig = os.environ["KUBECONFIG"]
    report = _check_on(_api_client(kubeconfig), kubeconfig, namespace, out.out_dir,
                       timeout_s=float(os.environ.get("TRITONMIX_K8S_TIMEOUT_S", "600")))
    print(report)
    assert report.pools
