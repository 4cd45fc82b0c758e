"""Object reads and writes for ``FakeApiServer``: what the cluster check (``cluster.ClusterCheck``) sends, served as
kube-apiserver answers it, so that the check runs here through the real client::

    POST   /api/v1/namespaces                                       create a namespace (409 if it exists)
    DELETE /api/v1/namespaces/NS                                    delete it and every object in it
    GET    /apis/GROUP/VERSION                                      200 for a served group, 404 otherwise
                                                                    (keda.sh/v1alpha1 only with ``groups``)
    GET    /api/v1/namespaces/NS/RESOURCE/NAME                      one object (404 if none)
    GET    /apis/GROUP/VERSION/namespaces/NS/RESOURCE/NAME
    PATCH  same paths, Content-Type application/apply-patch+yaml    server-side apply: create or replace
           (the body is JSON, which is YAML), or merge-patch+json    a JSON merge patch of the stored object
    DELETE same paths                                               delete one object
The namespace must exist for a write (404 otherwise). No controller runs: a test writes the status a Deployment's
controller would (``FakeApiServer.apply``). Services and EndpointSlices written here are listed and watched as any.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Set

from aiohttp import web

from .fakestore import status

__all__ = ["WriteRoutes", "BUILTIN_GROUPS", "merge_patch"]

#: the API groups every cluster serves that the rendered manifests use
BUILTIN_GROUPS = ("apps/v1", "autoscaling/v2", "discovery.k8s.io/v1", "networking.k8s.io/v1", "policy/v1",
                  "rbac.authorization.k8s.io/v1")

_Object = Dict[str, Any]
_KNOWN_KINDS = ("Deployment", "StatefulSet", "Service", "EndpointSlice", "ServiceAccount", "ConfigMap", "Role",
                "RoleBinding", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "ScaledObject")


def _plural(kind: str) -> str:
    """As kube-apiserver names these kinds' resources (``cluster.resource_path`` writes the same)."""
    return kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class WriteRoutes:
    """The routes of the module docstring over the server's store, through the coroutines it hands over."""

    def __init__(self, *, apply: Callable[[_Object], Awaitable[_Object]],
                 delete: Callable[[Any], Awaitable[None]], current: Callable[[Any], Awaitable[Optional[_Object]]],
                 objects: Callable[[str], List[_Object]], authorised: Callable[[web.Request], bool],
                 groups: Iterable[str]) -> None:
        self._apply, self._delete, self._current, self._objects = apply, delete, current, objects
        self._authorised = authorised
        self.groups: Set[str] = set(groups)
        self.namespaces: Set[str] = {"default"}
        #: resource (plural) -> kind: the kinds the rendered manifests and the check use, and any applied since
        self._kinds: Dict[str, str] = {_plural(k): k for k in _KNOWN_KINDS}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/namespaces", self._create_namespace)
        app.router.add_delete("/api/v1/namespaces/{name}", self._delete_namespace)
        app.router.add_get("/apis/{group}/{version}", self._group)
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            path = prefix + "/namespaces/{namespace}/{resource}/{name}"
            for method in ("GET", "PATCH", "DELETE"):
                app.router.add_route(method, path, self._object)

    async def _create_namespace(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        body = json.loads(await request.text())
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return web.json_response(status(422, "Invalid", "metadata.name: Required value"), status=422)
        if name in self.namespaces:
            return web.json_response(status(409, "AlreadyExists", f'namespaces "{name}" already exists'), status=409)
        self.namespaces.add(name)
        return web.json_response(body, status=201)

    async def _delete_namespace(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        name = request.match_info["name"]
        if name not in self.namespaces:
            return web.json_response(status(404, "NotFound", f'namespaces "{name}" not found'), status=404)
        for obj in self._objects(name):
            meta = obj["metadata"]
            await self._delete((obj["kind"], meta["namespace"], meta["name"]))
        self.namespaces.discard(name)
        return web.json_response({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}})

    async def _group(self, request: web.Request) -> web.Response:
        version = f"{request.match_info['group']}/{request.match_info['version']}"
        if version not in self.groups:
            return web.json_response(status(404, "NotFound", "the server could not find the requested resource"),
                                     status=404)
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version,
                                  "resources": []})

    async def _object(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        info = request.match_info
        namespace, resource, name = info["namespace"], info["resource"], info["name"]
        if namespace not in self.namespaces:
            return web.json_response(status(404, "NotFound", f'namespaces "{namespace}" not found'), status=404)
        kind = self._kinds.get(resource)
        key = (kind, namespace, name)
        current = await self._current(key) if kind else None
        if request.method == "GET" or (request.method == "DELETE" and current is None):
            if current is None:
                return web.json_response(status(404, "NotFound", f'{resource} "{name}" not found'), status=404)
            return web.json_response(current)
        if request.method == "DELETE":
            await self._delete(key)
            return web.json_response(current)
        body = json.loads(await request.text())
        if request.content_type == "application/apply-patch+yaml":
            obj = body
        elif request.content_type == "application/merge-patch+json" and current is not None:
            obj = merge_patch(current, body)
        else:
            return web.json_response(status(415, "UnsupportedMediaType", f"{request.content_type} on {resource}"
                                            f"/{name}"), status=415)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name or meta.get("namespace", namespace) != namespace or not obj.get("kind"):
            return web.json_response(status(400, "BadRequest", "the body's kind, name or namespace does not match "
                                            "the path"), status=400)
        meta["name"], meta["namespace"] = name, namespace
        self._kinds[resource] = obj["kind"]
        return web.json_response(await self._apply(obj))
