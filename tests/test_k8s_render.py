"""``tritonmix k8s render``: every manifest validates against the official schemas of Kubernetes 1.32 (strict: no
unknown field), each ScaledObject against KEDA's documented fields, ``kubectl kustomize`` builds the directory, the
Services carry what discovery reads, missing values are named, and nothing is half-written.

``pytest -m k8s`` adds a check against a real cluster (KUBECONFIG set; skipped otherwise): see docs/kubernetes.md.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import jsonschema
import pytest
import yaml

from tritonmix import Fleet
from tritonmix.cli import main
from tritonmix.errors import ConfigError
from tritonmix.k8s import labels as L
from tritonmix.k8s.render import KUSTOMIZATION, render

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "fleet-k8s.yaml"
KUBERNETES_VERSION = "1.32.0"  # the schemas kubernetes-validate ships for it; kubectl here is 1.32 too
VALUES: Dict[str, Any] = {
    "namespace": "inference", "triton_image": "nvcr.io/nvidia/tritonserver:24.08-py3",
    "model_repository": "s3://models/sd/{accelerator}", "plane_image": "registry.example/tritonmix:0.1",
    "prometheus_url": "http://prometheus-server.monitoring.svc:9090", "prometheus_namespace": "monitoring",
    "max_replicas": {"*": 8, "cpu": 2},
}

# KEDA's ScaledObject (keda.sh/v1alpha1) as its documentation states it: the spec's fields from
# https://keda.sh/docs/2.16/reference/scaledobject-spec/ (scaleTargetRef, pollingInterval, cooldownPeriod,
# initialCooldownPeriod, idleReplicaCount, minReplicaCount, maxReplicaCount, fallback, advanced, triggers and the
# trigger fields type, metadata, name, useCachedMetrics, authenticationRef, metricType), and the prometheus trigger's
# metadata from https://keda.sh/docs/2.16/scalers/prometheus/. Trigger metadata is a map of strings in the CRD.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_INT = {"type": "integer", "minimum": 0, "maximum": 2 ** 31 - 1}
_PROMETHEUS_METADATA = {
    "type": "object", "additionalProperties": False,
    "required": ["serverAddress", "query", "threshold"],
    "properties": {k: {"type": "string"} for k in (
        "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
        "ignoreNullValues", "queryParameters", "unsafeSsl", "authModes")},
}
KEDA_SCALEDOBJECT = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                    "labels": _STRINGS, "annotations": _STRINGS}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                   "properties": {k: {"type": "string"} for k in (
                                       "apiVersion", "kind", "name", "envSourceContainerName")}},
                **{k: _INT for k in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount")},
                "fallback": {"type": "object", "additionalProperties": False,
                             "required": ["failureThreshold", "replicas"],
                             "properties": {"failureThreshold": _INT, "replicas": _INT}},
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                    "properties": {
                        "type": {"type": "string"}, "metadata": _STRINGS, "name": {"type": "string"},
                        "useCachedMetrics": {"type": "boolean"},
                        "authenticationRef": {"type": "object", "required": ["name"],
                                              "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]}},
                    "if": {"properties": {"type": {"const": "prometheus"}}},
                    "then": {"properties": {"metadata": _PROMETHEUS_METADATA}},
                }},
            },
        },
    },
}


def _docs(directory: Path) -> Dict[str, Any]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(directory.glob("*.yaml"))}


@pytest.fixture
def rendered(tmp_path: Path) -> Dict[str, Any]:
    render(EXAMPLE, tmp_path / "out", **VALUES)
    return _docs(tmp_path / "out")


def _kinds(docs: Dict[str, Any], kind: str) -> List[Dict[str, Any]]:
    return [d for d in docs.values() if d.get("kind") == kind]


# ---- schemas -----------------------------------------------------------------------------------------------------

def test_every_builtin_manifest_validates_strictly_against_kubernetes_1_32(rendered: Dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    builtin = {n: d for n, d in rendered.items() if d["kind"] not in ("ScaledObject", "Kustomization")}
    assert {d["kind"] for d in builtin.values()} == {
        "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "StatefulSet",
        "PodDisruptionBudget", "NetworkPolicy"}
    for name, doc in builtin.items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_strict_schemas_catch_an_unknown_field_and_a_wrong_type(rendered: Dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    (deployment, *_) = _kinds(rendered, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    (pdb,) = _kinds(rendered, "PodDisruptionBudget")
    pdb["spec"]["minAvailable"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, KUBERNETES_VERSION, strict=True)


def test_each_scaledobject_has_only_kedas_documented_fields_and_catches_others(rendered: Dict[str, Any]) -> None:
    scaled = _kinds(rendered, "ScaledObject")
    assert len(scaled) == 5
    for doc in scaled:
        jsonschema.validate(doc, KEDA_SCALEDOBJECT)
    bad = yaml.safe_load(yaml.safe_dump(scaled[0]))
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 1  # a number: the CRD's metadata holds strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, KEDA_SCALEDOBJECT)
    bad = yaml.safe_load(yaml.safe_dump(scaled[0]))
    bad["spec"]["triggers"][0]["metadata"]["metricName"] = "x"  # removed in KEDA 2.12
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, KEDA_SCALEDOBJECT)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_directory_with_every_object(tmp_path: Path) -> None:
    out = render(EXAMPLE, tmp_path / "out", **VALUES)
    listed = yaml.safe_load((out.out_dir / KUSTOMIZATION).read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in out.out_dir.glob("*.yaml") if p.name != KUSTOMIZATION)
    built = subprocess.run(["kubectl", "kustomize", str(out.out_dir)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert len(docs) == len(listed)
    assert sum(d["kind"] == "ScaledObject" for d in docs) == 5
    assert {d["metadata"]["namespace"] for d in docs} == {"inference"}


# ---- what the objects say ----------------------------------------------------------------------------------------

def test_each_pools_service_carries_the_labels_and_annotations_discovery_reads(rendered: Dict[str, Any]) -> None:
    fleet = Fleet.from_file(EXAMPLE)
    services = {s["metadata"]["labels"].get(L.POOL_LABEL): s for s in _kinds(rendered, "Service")}
    for endpoint in fleet.endpoints:
        service = services[endpoint.pool_name]
        meta = service["metadata"]
        assert meta["labels"][L.FLEET_LABEL] == "fleet-k8s"
        ann = meta["annotations"]
        assert float(ann[L.PRICE_ANNOTATION]) == endpoint.price_per_hour
        assert ann[L.ACCELERATOR_ANNOTATION] == endpoint.accelerator
        assert ann[L.INSTANCE_TYPE_ANNOTATION] == endpoint.instance_type
        assert ann[L.CAPACITY_TYPE_ANNOTATION] == endpoint.capacity_type
        assert int(ann[L.MAX_CONCURRENCY_ANNOTATION]) == endpoint.max_concurrency
        assert [p["name"] for p in service["spec"]["ports"]] == list(L.PORT_NAMES)
        assert service["spec"]["selector"] == {L.FLEET_LABEL: "fleet-k8s", L.POOL_LABEL: endpoint.pool_name}


def test_pools_get_their_accelerator_node_selection_probes_ports_and_drain(rendered: Dict[str, Any]) -> None:
    deployments = {d["metadata"]["labels"][L.POOL_LABEL]: d for d in _kinds(rendered, "Deployment")}
    want = {"inf2": "aws.amazon.com/neuron", "trn1": "aws.amazon.com/neuron", "g5": "nvidia.com/gpu",
            "g6": "nvidia.com/gpu", "cpu": None}
    for pool, resource in want.items():
        spec = deployments[pool]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        limits = container.get("resources", {}).get("limits", {})
        assert limits == ({resource: 1} if resource else {}), pool
        assert "replicas" not in deployments[pool]["spec"]  # KEDA's HPA owns the count
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001,
                                                                               "metrics": 8002}
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
        assert spec["terminationGracePeriodSeconds"] > 15 + 30  # drain + Triton's exit timeout
        accelerator = {"inf2": "neuron", "trn1": "neuron", "g5": "gpu", "g6": "gpu", "cpu": "cpu"}[pool]
        assert f"--model-repository=s3://models/sd/{accelerator}" in container["args"]
    assert deployments["g5"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "g5.xlarge", "karpenter.sh/capacity-type": "spot"}
    assert deployments["g6"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "g6.xlarge"}


def test_a_karpenter_nodepool_a_pvc_repository_and_an_explicit_resource(tmp_path: Path) -> None:
    values = dict(VALUES, node_pool={"g6": "gpu-l4"}, model_repository={"*": "s3://m/{pool}", "cpu": "pvc://models/cpu"},
                  accelerator_resource={"trn1": "aws.amazon.com/neuroncore:2"})
    render(EXAMPLE, tmp_path / "out", **values)
    docs = _docs(tmp_path / "out")
    deployments = {d["metadata"]["labels"][L.POOL_LABEL]: d["spec"]["template"]["spec"]
                   for d in _kinds(docs, "Deployment")}
    assert deployments["g6"]["nodeSelector"]["karpenter.sh/nodepool"] == "gpu-l4"
    assert deployments["trn1"]["containers"][0]["resources"]["limits"] == {"aws.amazon.com/neuroncore": 2}
    assert deployments["cpu"]["volumes"] == [{"name": "models", "persistentVolumeClaim":
                                              {"claimName": "models", "readOnly": True}}]
    assert "--model-repository=/models/cpu" in deployments["cpu"]["containers"][0]["args"]
    assert "--model-repository=s3://m/inf2" in deployments["inf2"]["containers"][0]["args"]


def test_the_scaledobject_scales_its_deployment_on_the_planes_figure_for_its_pool(rendered: Dict[str, Any]) -> None:
    for doc in _kinds(rendered, "ScaledObject"):
        pool = doc["metadata"]["labels"][L.POOL_LABEL]
        spec = doc["spec"]
        assert spec["scaleTargetRef"]["name"] == doc["metadata"]["name"]
        (trigger,) = spec["triggers"]
        assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "1"
        assert trigger["metadata"]["query"] == f'max(tritonmix_plane_desired_replicas{{pool="{pool}"}})'
        assert trigger["metadata"]["ignoreNullValues"] == "false"
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 2 if pool == "cpu" else 8)


def test_the_plane_is_a_statefulset_of_two_with_stable_names_and_a_least_privilege_role(
        rendered: Dict[str, Any]) -> None:
    (sts,) = _kinds(rendered, "StatefulSet")
    (svc,) = [s for s in _kinds(rendered, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert sts["spec"]["replicas"] == 2 and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    script = sts["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    name, ns = sts["metadata"]["name"], "inference"
    for k in range(2):
        assert f"--replica {name}-{k}.{name}.{ns}.svc:8470" in script
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PLANE_HOST"]["value"] == f"$(POD_NAME).{name}.{ns}.svc"  # the name it is listed under
    assert env["TRITONMIX_CONTROL_PLANE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == \
        "tritonmix-control-plane-token"
    (role,) = _kinds(rendered, "Role")
    assert sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]) == [
        (("",), ("services",), ("get", "list", "watch")),
        (("discovery.k8s.io",), ("endpointslices",), ("get", "list", "watch"))]
    (binding,) = _kinds(rendered, "RoleBinding")
    assert binding["subjects"][0]["name"] == sts["spec"]["template"]["spec"]["serviceAccountName"]
    (pdb,) = _kinds(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (config,) = _kinds(rendered, "ConfigMap")
    assert Fleet.from_dict(yaml.safe_load(config["data"]["fleet.yaml"])).names == Fleet.from_file(EXAMPLE).names
    policies = {p["metadata"]["name"]: p for p in _kinds(rendered, "NetworkPolicy")}
    plane = policies[name]["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in plane[1]["from"]
    assert {"protocol": "UDP", "port": 8470} in plane[0]["ports"]  # the load channel


# ---- bad input, atomic writes --------------------------------------------------------------------------------------

def test_missing_required_values_are_each_named_with_their_flag_and_nothing_is_written(tmp_path: Path) -> None:
    values = {k: v for k, v in VALUES.items() if k not in ("triton_image", "max_replicas")}
    with pytest.raises(ConfigError) as info:
        render(EXAMPLE, tmp_path / "out", **values)
    assert "triton_image (--triton-image" in str(info.value) and "max_replicas (--max-replicas" in str(info.value)
    assert "namespace" not in str(info.value).split("missing required value(s):")[1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, names", [
    ({"max_replicas": {"g5": 3}}, "max_replicas for pool 'inf2'"),
    ({"min_replicas": 0}, "min_replicas for pool"),
    ({"min_replicas": 9}, "min_replicas 9 > max_replicas"),
    ({"model_repository": "models/{accelerator}"}, "must start with"),
    ({"model_repository": "s3://x/{region}"}, "only {pool} and {accelerator}"),
    ({"namespace": "Inference"}, "namespace 'Inference'"),
    ({"prometheus_url": "prometheus:9090"}, "prometheus_url"),
    ({"metric_selector": "namespace=ml"}, "metric_selector"),
    ({"accelerator_resource": {"g5": "gpu"}}, "accelerator_resource 'gpu'"),
    ({"bogus": 1}, "unknown value(s) bogus"),
])
def test_a_bad_value_is_named_and_nothing_is_written(tmp_path: Path, change: Dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        render(EXAMPLE, tmp_path / "out", **dict(VALUES, **change))
    assert list(tmp_path.iterdir()) == []


def test_pools_that_cannot_be_one_deployment_or_have_no_device_resource_are_refused(tmp_path: Path) -> None:
    base = {"name": "a", "pool": "p", "url": "h:1", "accelerator": "gpu", "instance_type": "g5.xlarge",
            "price_per_hour": 1.0}
    mixed = Fleet.from_dict({"endpoints": [base, dict(base, name="b", price_per_hour=2.0)]})
    with pytest.raises(ConfigError, match="pool 'p': endpoints 'a' and 'b' differ in 'price_per_hour'"):
        render(mixed, tmp_path / "out", **dict(VALUES, fleet_name="f"))
    tpu = Fleet.from_dict({"endpoints": [dict(base, accelerator="tpu")]})
    with pytest.raises(ConfigError, match="accelerator 'tpu' has no known device resource"):
        render(tpu, tmp_path / "out", **dict(VALUES, fleet_name="f"))
    bare = Fleet.from_dict({"endpoints": [dict(base, instance_type="")]})
    with pytest.raises(ConfigError, match="no instance_type .* --node-pool p=NODEPOOL"):
        render(bare, tmp_path / "out", **dict(VALUES, fleet_name="f"))
    assert list(tmp_path.iterdir()) == []


def test_a_discovering_fleet_is_the_planes_and_must_look_where_the_pools_go(tmp_path: Path) -> None:
    discovering = tmp_path / "live.yaml"
    discovering.write_text(yaml.safe_dump({"endpoints": {"kubernetes": {"namespace": "inference",
                                                                         "fleet": "fleet-k8s"}}}))
    with pytest.raises(ConfigError, match="lists no pools: give --fleet a file that lists one endpoint per pool"):
        render(discovering, tmp_path / "out", **VALUES)
    with pytest.raises(ConfigError, match="discovers namespace 'inference', fleet 'fleet-k8s', but the pools go to "
                       "namespace 'inference' labelled fleet 'sd'"):
        render(EXAMPLE, tmp_path / "out", plane_fleet=discovering, **dict(VALUES, fleet_name="sd"))
    assert not (tmp_path / "out").exists()
    render(EXAMPLE, tmp_path / "out", plane_fleet=discovering, **VALUES)
    (config,) = _kinds(_docs(tmp_path / "out"), "ConfigMap")
    assert config["data"]["fleet.yaml"] == discovering.read_text()


def test_an_existing_directory_is_replaced_whole_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        render(EXAMPLE, out, **VALUES)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    render(EXAMPLE, out, overwrite=True, **VALUES)
    assert not (out / "mine.txt").exists() and (out / KUSTOMIZATION).is_file()
    with pytest.raises(ConfigError):  # a failing render leaves the previous output as it was
        render(EXAMPLE, out, overwrite=True, **dict(VALUES, max_replicas=0))
    assert (out / KUSTOMIZATION).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old directory left


def test_the_cli_renders_and_names_a_missing_value(tmp_path: Path, capsys: Any) -> None:
    args = ["k8s", "render", "--fleet", str(EXAMPLE), "--out", str(tmp_path / "out"), "--namespace", "inference",
            "--triton-image", "nvcr.io/nvidia/tritonserver:24.08-py3", "--model-repository", "s3://m/{accelerator}",
            "--plane-image", "r/tritonmix:1", "--prometheus-url", "http://p.monitoring:9090",
            "--prometheus-namespace", "monitoring"]
    assert main(args) == 2
    assert "max_replicas (--max-replicas" in capsys.readouterr().err
    assert main(args + ["--max-replicas", "8", "--max-replicas", "cpu=2", "--node-pool", "g6=gpu-l4"]) == 0
    printed = capsys.readouterr().out
    assert 'KEDA query: max(tritonmix_plane_desired_replicas{pool="inf2"})' in printed
    docs = _docs(tmp_path / "out")
    assert docs["fleet-k8s-cpu-scaledobject.yaml"]["spec"]["maxReplicaCount"] == 2
    assert docs["fleet-k8s-g6-deployment.yaml"]["spec"]["template"]["spec"]["nodeSelector"][
        "karpenter.sh/nodepool"] == "gpu-l4"


# ---- a real cluster: pytest -m k8s ---------------------------------------------------------------------------------

def _quantity(text: str) -> float:
    """A Kubernetes quantity as the HPA writes metric values: "2", "1500m"."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kubectl(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.k8s
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no KUBECONFIG: the real-cluster check needs one")
def test_on_a_real_cluster_render_applies_and_keda_scales_each_pool_to_the_planes_figure(tmp_path: Path) -> None:
    """Render with the values in $TRITONMIX_K8S_VALUES (a YAML file of render values; the fleet in
    $TRITONMIX_K8S_FLEET, default the example), server-side dry run, apply, then wait until each pool's HPA (made by
    KEDA) reads the plane's figure and the Deployment has ceil(figure) replicas within [min, max]."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    values_file = os.environ.get("TRITONMIX_K8S_VALUES")
    if not values_file:
        pytest.skip("TRITONMIX_K8S_VALUES (a YAML file of render values for this cluster) is not set")
    values = yaml.safe_load(Path(values_file).read_text())
    out = render(os.environ.get("TRITONMIX_K8S_FLEET", str(EXAMPLE)), tmp_path / "out", **values)
    dry = _kubectl("apply", "--dry-run=server", "-k", str(out.out_dir))
    assert dry.returncode == 0, dry.stderr
    applied = _kubectl("apply", "-k", str(out.out_dir))
    assert applied.returncode == 0, applied.stderr
    ns = values["namespace"]
    deadline = time.monotonic() + float(os.environ.get("TRITONMIX_K8S_TIMEOUT_S", "600"))
    pending = dict(out.names)
    while pending:
        for pool, name in list(pending.items()):
            hpa = _kubectl("get", "hpa", f"keda-hpa-{name}", "-n", ns, "-o", "json")
            deployment = _kubectl("get", "deployment", name, "-n", ns, "-o", "jsonpath={.spec.replicas}")
            if hpa.returncode != 0 or deployment.returncode != 0:
                continue
            status = yaml.safe_load(hpa.stdout).get("status", {})
            metrics = [m["external"]["current"] for m in status.get("currentMetrics") or [] if m.get("external")]
            if not metrics:
                continue
            # AverageValue: the HPA shows the metric divided by the current replicas; times them, the plane's figure
            figure = _quantity(metrics[0]["averageValue"]) * status["currentReplicas"]
            spec = yaml.safe_load(hpa.stdout)["spec"]
            want = min(spec["maxReplicas"], max(spec.get("minReplicas", 1), math.ceil(figure - 1e-6)))
            if int(deployment.stdout or 0) == want:
                del pending[pool]
        assert time.monotonic() < deadline, f"pools not scaled to the plane's figure: {sorted(pending)}"
        time.sleep(5)
