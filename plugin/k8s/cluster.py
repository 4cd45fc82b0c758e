"""Render -> apply -> discover -> scale -> delete against an API server, through the official client: what
``pytest -m k8s`` runs on a real cluster (``tests/test_k8s_cluster.py``), and what the local API server
(``fakeapi``) runs here on every ``make test``, so that none of it is dead code.

    ClusterCheck(api_client, namespace)            one namespace of its own per run, deleted at the end
      create_namespace()                            POST /api/v1/namespaces
      apply(obj)                                    server-side apply: PATCH .../NAME, application/apply-patch+yaml,
                                                    fieldManager=tritonmix-check, force=true (create or update)
      get(kind, api_version, name)                  the object, None on 404
      has_api(group_version)                        GET /apis/GROUP/VERSION: False on 404 (KEDA's CRD absent)
      scale(deployment, replicas)                   merge patch of spec.replicas (what an HPA writes)
      delete_namespace()                            DELETE /api/v1/namespaces/NS (everything in it goes)

    run_check(check, rendered_dir, fleet_name, settings_for, ...)
      1. apply every rendered object (ScaledObjects only where keda.sh/v1alpha1 is served: skipped, and said,
         where KEDA is not installed) with the namespace set to the run's
      2. wait until every pool's Service exists and its Deployment reports one ready replica
      3. discovery (``KubernetesSource``) on the namespace sees one ready endpoint per pool
      4. scale: with KEDA, its HPA (keda-hpa-<name>) exists for every pool; the first pool's Deployment is then
         patched to 2 replicas (without KEDA; KEDA's HPA would set it back) and discovery sees 2 ready endpoints
A step that does not finish within ``timeout_s`` raises ``CheckFailed`` naming it and what was seen.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from . import labels

__all__ = ["ClusterCheck", "CheckFailed", "CheckReport", "run_check", "resource_path", "FIELD_MANAGER"]

_log = logging.getLogger(__name__)

FIELD_MANAGER = "tritonmix-check"
KEDA_API = "keda.sh/v1alpha1"


class CheckFailed(AssertionError):
    """A step of the check did not finish in time, or the API server refused a request (the message names which)."""


def resource_path(api_version: str, kind: str, namespace: Optional[str], name: Optional[str] = None) -> str:
    """The REST path of a namespaced object (or of its collection when ``name`` is None): core ``v1`` under
    /api/v1, every group under /apis/GROUP/VERSION; the plural is lower(kind) + "s" (-y: "-ies"), right for
    every kind the rendered manifests hold."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class ClusterCheck:
    """Requests of the check on one namespace, through ``api_client`` (a ``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api, self.namespace = api_client, namespace

    def _call(self, method: str, path: str, *, body: Any = None, query: Sequence[Tuple[str, str]] = (),
              content_type: str = "application/json") -> Any:
        """One request through the client's own serialisation, authentication and TLS; the answer's JSON, None for
        a 404 to a GET or DELETE; CheckFailed naming the request for any other error."""
        from kubernetes.client.rest import ApiException  # noqa: PLC0415 - the client is an optional extra

        try:
            request = self.api.param_serialize(method=method, resource_path=path, query_params=list(query),
                                               header_params={"Content-Type": content_type,
                                                              "Accept": "application/json"},
                                               body=body, auth_settings=["BearerToken"])
            answer = self.api.call_api(*request, _request_timeout=30)
            answer.read()
        except ApiException as exc:
            raise CheckFailed(f"{method} {path}: {exc.status} {exc.reason}: {(exc.body or '')[:300]}") from exc
        data = answer.data.decode() if isinstance(answer.data, bytes) else (answer.data or "")
        if answer.status == 404 and method in ("GET", "DELETE"):
            return None
        if not 200 <= answer.status < 300:
            raise CheckFailed(f"{method} {path}: {answer.status} {answer.reason}: {data[:300]}")
        return json.loads(data) if data else {}

    def create_namespace(self) -> None:
        self._call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": self.namespace}})

    def delete_namespace(self) -> None:
        self._call("DELETE", f"/api/v1/namespaces/{self.namespace}")

    def apply(self, obj: Mapping[str, Any]) -> Dict[str, Any]:
        """Server-side apply of ``obj`` in the run's namespace (its own namespace is replaced)."""
        body = dict(obj, metadata=dict(obj.get("metadata") or {}, namespace=self.namespace))
        path = resource_path(body["apiVersion"], body["kind"], self.namespace, body["metadata"]["name"])
        return self._call("PATCH", path, body=body, content_type="application/apply-patch+yaml",
                          query=[("fieldManager", FIELD_MANAGER), ("force", "true")])

    def get(self, kind: str, api_version: str, name: str) -> Optional[Dict[str, Any]]:
        return self._call("GET", resource_path(api_version, kind, self.namespace, name))

    def has_api(self, group_version: str) -> bool:
        return self._call("GET", f"/apis/{group_version}") is not None

    def scale(self, deployment: str, replicas: int) -> None:
        self._call("PATCH", resource_path("apps/v1", "Deployment", self.namespace, deployment),
                   body={"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")


@dataclasses.dataclass
class CheckReport:
    """What a run did and saw (the test prints it; a step that failed raised instead)."""

    namespace: str
    applied: List[str] = dataclasses.field(default_factory=list)      # "Kind/name"
    skipped: List[str] = dataclasses.field(default_factory=list)      # "Kind/name: why"
    keda: bool = False
    pools: Dict[str, str] = dataclasses.field(default_factory=dict)   # pool -> its Deployment and Service name
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)  # step -> how long it took


def rendered_objects(rendered_dir: Path) -> List[Dict[str, Any]]:
    """Every object ``tritonmix k8s render`` wrote (the kustomization aside), in file order."""
    objects = []
    for path in sorted(Path(rendered_dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                objects.append(doc)
    return objects


def _wait(step: str, timeout_s: float, probe: Callable[[], Tuple[bool, str]], period_s: float = 0.5) -> float:
    """Poll ``probe`` (-> (done, what was seen)) until done; the seconds it took. CheckFailed after timeout_s."""
    start = time.monotonic()
    while True:
        done, seen = probe()
        if done:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise CheckFailed(f"{step}: not done after {timeout_s:.0f} s; last seen: {seen}")
        time.sleep(period_s)


class _Latest:
    """The discovery source's last reported set (its ``on_change``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.states: Tuple[Any, ...] = ()

    def __call__(self, states: Sequence[Any]) -> None:
        with self._lock:
            self.states = tuple(states)

    def ready_by_pool(self) -> Dict[str, int]:
        with self._lock:
            states = self.states
        out: Dict[str, int] = {}
        for s in states:
            if s.ready and not s.terminating:
                out[s.spec.pool_name] = out.get(s.spec.pool_name, 0) + 1
        return out


def run_check(check: ClusterCheck, rendered_dir: Path, source_factory: Callable[[], Any], *,
              timeout_s: float = 600.0, scale_to: int = 2) -> CheckReport:
    """Steps 1-4 of the module docstring on ``check``'s namespace (created and deleted by the caller).
    ``source_factory()``: a discovery source (``KubernetesSource``) on that namespace and the fleet's label."""
    report = CheckReport(check.namespace)
    report.keda = check.has_api(KEDA_API)
    objects = rendered_objects(rendered_dir)
    for obj in objects:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] == KEDA_API and not report.keda:
            report.skipped.append(f"{label}: {KEDA_API} is not served (KEDA is not installed)")
            continue
        check.apply(obj)
        report.applied.append(label)
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    for obj in objects:
        if obj["kind"] == "Service" and obj["metadata"]["name"] in deployments:
            pool = (obj["metadata"].get("labels") or {}).get(labels.POOL_LABEL, obj["metadata"]["name"])
            report.pools[pool] = obj["metadata"]["name"]

    def ready_replicas() -> Tuple[bool, str]:
        seen = {}
        for name in report.pools.values():
            service, deployment = check.get("Service", "v1", name), check.get("Deployment", "apps/v1", name)
            seen[name] = None if service is None or deployment is None else \
                (deployment.get("status") or {}).get("readyReplicas", 0)
        return all(v is not None and v >= 1 for v in seen.values()), str(seen)

    report.seconds["deployments ready"] = _wait("every pool's Service and a ready Deployment", timeout_s,
                                                ready_replicas)
    latest = _Latest()
    source = source_factory()
    source.start(latest)
    try:
        report.seconds["discovered"] = _wait(
            "discovery sees one ready endpoint per pool", timeout_s,
            lambda: (all(latest.ready_by_pool().get(p, 0) >= 1 for p in report.pools), str(latest.ready_by_pool())))
        first_pool = sorted(report.pools)[0]
        if report.keda:
            report.seconds["keda hpa"] = _wait(
                "KEDA made an HPA for every pool", timeout_s,
                lambda: (all(check.get("HorizontalPodAutoscaler", "autoscaling/v2", f"keda-hpa-{n}") is not None
                             for n in report.pools.values()), "HPAs missing"))
        else:
            check.scale(report.pools[first_pool], scale_to)
            report.seconds["scaled"] = _wait(
                f"discovery sees {scale_to} ready endpoints of pool {first_pool}", timeout_s,
                lambda: (latest.ready_by_pool().get(first_pool, 0) >= scale_to, str(latest.ready_by_pool())))
    finally:
        source.stop()
    _log.info("cluster check in %s: %s", check.namespace, report)
    return report
