"""A local Kubernetes API server for Services and EndpointSlices that speaks the real list + watch protocol.

It is for tests and benches: no Kubernetes API server can be installed on our machines, and discovery must be driven
through the real client library, not a stub of it. What it serves, as ``kube-apiserver`` does::

    GET /api/v1/namespaces/NS/services                         list: {"metadata": {"resourceVersion", "continue"},
    GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices        "items": [...]}
        ?labelSelector=k=v,k!=v,k,!k    equality and existence requirements, ANDed
        ?limit=N&continue=TOKEN         chunked lists: every chunk is served from the first chunk's snapshot;
                                        a token older than the last compaction is 410 Expired
        ?watch=1&resourceVersion=RV     watch: newline-separated JSON events after RV (ADDED, MODIFIED, DELETED;
                                        an object that starts or stops matching the selector is ADDED or DELETED);
                                        RV unset or "0": the current objects as ADDED first; RV older than the last
                                        compaction: one ERROR event with a 410 Expired Status, then the stream ends
        &allowWatchBookmarks=true       a BOOKMARK with the current resourceVersion after every quiet
                                        ``bookmark_interval_s`` (and on ``bookmark()``)
        &timeoutSeconds=N               the stream ends cleanly after N s

resourceVersions are one counter over every object, as etcd's revision is. With ``token`` set, every request must
carry ``Authorization: Bearer <token>`` (401 otherwise), which shows that a client really loaded its credentials.

Faults, from the test's thread: ``compact()`` forgets history (old resourceVersions and continue tokens get 410;
by default open watches also end with a 410 ERROR event, as the watch cache does to a watcher it dropped),
``drop_watches()`` aborts every open watch connection mid-stream (no final chunk), ``restart()`` closes the listening
socket and every connection, refuses connections for ``down_s``, then serves the same objects on the same port.

    with FakeApiServer(token="t") as api:
        api.apply({"kind": "Service", "metadata": {"name": "inf2", "namespace": "ns", "labels": {...}}, ...})
        kubernetes.config.load_kube_config(str(api.kubeconfig_path()))

The server runs an asyncio loop (aiohttp) on one daemon thread; the methods above may be called from any thread.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from aiohttp import web

from .fakestore import KINDS, Change, Selector, Store, event_for, status
from .fakewrites import BUILTIN_GROUPS, WriteRoutes

__all__ = ["FakeApiServer", "RequestRecord", "KINDS"]

_BY_RESOURCE = {resource: kind for kind, (_, resource, _) in KINDS.items()}


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: for tests to assert how a client listed and watched."""

    kind: str
    namespace: str
    watch: bool
    query: Mapping[str, str]


@dataclasses.dataclass(eq=False)
class _Watch:
    kind: str
    namespace: str
    selector: Selector
    bookmarks: bool
    queue: "asyncio.Queue[Optional[Dict[str, Any]]]"
    request: web.Request


class FakeApiServer:
    """A list + watch API server for Services and EndpointSlices on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, token: Optional[str] = None, bookmark_interval_s: float = 1.0, port: int = 0,
                 tls: bool = False, groups: Sequence[str] = BUILTIN_GROUPS) -> None:
        """``groups``: the API groups ``GET /apis/GROUP/VERSION`` finds (``fakewrites``; add "keda.sh/v1alpha1"
        for a cluster with KEDA installed)."""
        self.token = token
        self.tls = tls
        self.bookmark_interval_s = bookmark_interval_s
        self._port = port
        self._store = Store()
        self._watches: Set[_Watch] = set()
        self._records: List[RequestRecord] = []
        self._records_lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tritonmix-fakeapi-")
        #: object reads and writes, namespaces and API groups (``fakewrites``: what the cluster check sends)
        self.writes = WriteRoutes(apply=self._apply, delete=self._delete, current=self._current,
                                  objects=lambda ns: self._store.objects(None, ns), authorised=self._authorised,
                                  groups=groups)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "FakeApiServer":
        """Serve on a free port (or the one given) until ``stop()``; returns self."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="tritonmix-fakeapi", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._serve())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        self._loop.close()
        self._loop = None
        self._tmp.cleanup()

    def __enter__(self) -> "FakeApiServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def restart(self, down_s: float = 0.3) -> None:
        """Close the listening socket and every connection, refuse connections for ``down_s``, then serve the same
        objects (and resourceVersions) on the same port, as an API server restarted over the same etcd does."""
        self._call(self._shutdown())
        time.sleep(down_s)
        self._call(self._serve())

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def ca_path(self) -> Path:
        """With ``tls``: the self-signed certificate (for 127.0.0.1) that the server presents, which is its own CA."""
        return Path(self._tmp.name) / "ca.crt"

    def serviceaccount_dir(self) -> Path:
        """With ``tls``: a folder laid out as a pod's ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token``,
        ``ca.crt``, ``namespace``); with ``KUBERNETES_SERVICE_HOST=127.0.0.1`` and ``KUBERNETES_SERVICE_PORT=port``
        the client's in-cluster loader reaches this server."""
        folder = Path(self._tmp.name) / "serviceaccount"
        folder.mkdir(exist_ok=True)
        (folder / "token").write_text(self.token or "")
        (folder / "ca.crt").write_bytes(self.ca_path.read_bytes())
        (folder / "namespace").write_text("default")
        return folder

    def kubeconfig_path(self, namespace: str = "default") -> Path:
        """Write a kubeconfig whose current context points at this server (with the bearer token, if any)."""
        user: Dict[str, Any] = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url, **(
                {"certificate-authority": str(self.ca_path)} if self.tls else {})}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path = Path(self._tmp.name) / "kubeconfig"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    # -- objects ---------------------------------------------------------------------------------------------
    def apply(self, obj: Mapping[str, Any]) -> Dict[str, Any]:
        """Create or replace a Service or EndpointSlice (by kind, namespace, name); returns the stored copy with its
        new resourceVersion. Watchers see ADDED or MODIFIED."""
        return self._call(self._apply(copy.deepcopy(dict(obj))))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object; watchers see DELETED. KeyError when there is no such object."""
        self._call(self._delete((kind, namespace, name)))

    def get(self, kind: str, namespace: str, name: str) -> Optional[Dict[str, Any]]:
        return copy.deepcopy(self._call(self._current((kind, namespace, name))))

    def objects(self, kind: str, namespace: str) -> List[Dict[str, Any]]:
        """The current objects of one kind in a namespace (any kind: what the cluster check applied too)."""
        return copy.deepcopy(self._call(self._objects(kind, namespace)))

    @property
    def resource_version(self) -> int:
        return self._store.rv

    def compact(self, expire_watches: bool = True) -> int:
        """Forget the history up to now: a watch from an older resourceVersion or an older continue token gets
        410 Gone. With ``expire_watches``, every open watch also ends with a 410 ERROR event. Returns the
        compaction's resourceVersion."""
        return self._call(self._compact(expire_watches))

    def drop_watches(self) -> int:
        """Abort every open watch connection mid-stream; returns how many."""
        return self._call(self._drop())

    def bookmark(self) -> None:
        """Send a BOOKMARK now on every open watch that allows them."""
        self._call(self._bookmark_all())

    def requests(self, kind: Optional[str] = None, watch: Optional[bool] = None) -> List[RequestRecord]:
        """The list and watch requests answered so far (optionally of one kind, lists or watches only)."""
        with self._records_lock:
            return [r for r in self._records
                    if (kind is None or r.kind == kind) and (watch is None or r.watch == watch)]

    def open_watches(self) -> int:
        return len(self._watches)

    # -- loop side -------------------------------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("FakeApiServer is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10.0)

    async def _serve(self) -> None:
        app = web.Application()
        for kind, (prefix, resource, _) in KINDS.items():
            app.router.add_get(f"{prefix}/namespaces/{{namespace}}/{resource}", self._handle)
        self.writes.add_routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True, ssl_context=self._ssl())
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _ssl(self) -> Optional[ssl.SSLContext]:
        if not self.tls:
            return None
        key = Path(self._tmp.name) / "server.key"
        if not key.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", str(key), "-out", str(self.ca_path)], check=True, capture_output=True)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.ca_path), str(key))
        return context

    async def _shutdown(self) -> None:
        await self._drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _current(self, key: Any) -> Optional[Dict[str, Any]]:
        return self._store.current(key)

    async def _objects(self, kind: str, namespace: str) -> List[Dict[str, Any]]:
        return self._store.objects(kind, namespace)

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        return self.token is None or (scheme.lower() == "bearer" and credential == self.token)

    async def _apply(self, obj: Dict[str, Any]) -> Dict[str, Any]:
        change = self._store.apply(obj)
        self._fan_out(change)
        return copy.deepcopy(change.new)  # type: ignore[arg-type]

    async def _delete(self, key: Any) -> None:
        self._fan_out(self._store.delete(key))

    def _fan_out(self, change: Change) -> None:
        for watch in list(self._watches):
            event = event_for(watch.kind, watch.namespace, watch.selector, change)
            if event is not None:
                watch.queue.put_nowait(event)

    async def _compact(self, expire_watches: bool) -> int:
        compacted = self._store.compact()
        if expire_watches:
            for watch in list(self._watches):
                watch.queue.put_nowait({"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: compacted at {compacted}")})
                watch.queue.put_nowait(None)
        return compacted

    async def _drop(self) -> int:
        watches = list(self._watches)
        for watch in watches:
            if watch.request.transport is not None:
                watch.request.transport.abort()
            watch.queue.put_nowait(None)
        self._watches.clear()
        return len(watches)

    async def _bookmark_all(self) -> None:
        for watch in list(self._watches):
            if watch.bookmarks:
                watch.queue.put_nowait(self._bookmark_event(watch.kind))

    def _bookmark_event(self, kind: str) -> Dict[str, Any]:
        return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": KINDS[kind][2],
                                               "metadata": {"resourceVersion": str(self._store.rv)}}}

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        resource = request.path.rsplit("/", 1)[1]
        kind, namespace = _BY_RESOURCE[resource], request.match_info["namespace"]
        query = dict(request.query)
        watch = query.get("watch", "") in ("1", "true", "True")
        with self._records_lock:
            self._records.append(RequestRecord(kind, namespace, watch, query))
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if self.token is not None and (scheme.lower() != "bearer" or credential != self.token):
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        try:
            selector = Selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return web.json_response(status(400, "BadRequest", str(exc)), status=400)
        if watch:
            return await self._watch(request, kind, namespace, selector, query)
        return self._list(kind, namespace, selector, query)

    def _list(self, kind: str, namespace: str, selector: Selector, query: Mapping[str, str]) -> web.Response:
        at_rv, start = self._store.rv, ""
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
                at_rv, start = int(token["rv"]), str(token["start"])
            except (ValueError, KeyError, TypeError):
                return web.json_response(status(400, "BadRequest", "malformed continue token"), status=400)
            if at_rv < self._store.compacted_rv:
                return web.json_response(status(
                    410, "Expired", "The provided continue parameter is too old to display a consistent list result."),
                    status=410)
        items = [o for o in self._store.snapshot(kind, namespace, selector, at_rv) if o["metadata"]["name"] > start]
        meta: Dict[str, Any] = {"resourceVersion": str(at_rv)}
        limit = int(query.get("limit") or 0)
        if 0 < limit < len(items):
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": at_rv, "start": items[-1]["metadata"]["name"]}).encode()).decode()
            meta["remainingItemCount"] = len(self._store.snapshot(kind, namespace, selector, at_rv)) - limit
        body = {"kind": kind + "List", "apiVersion": KINDS[kind][2], "metadata": meta,
                "items": [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]}
        return web.json_response(body)

    async def _watch(self, request: web.Request, kind: str, namespace: str, selector: Selector,
                     query: Mapping[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        watch = _Watch(kind, namespace, selector, query.get("allowWatchBookmarks") in ("true", "1", "True"),
                       asyncio.Queue(), request)
        since = query.get("resourceVersion", "")
        # Replay and registration run without an await between them: no change can fall between the two.
        store = self._store
        if since in ("", "0"):
            for obj in store.snapshot(kind, namespace, selector, store.rv):
                watch.queue.put_nowait({"type": "ADDED", "object": obj})
        elif not since.isdigit() or int(since) < store.compacted_rv:
            watch.queue.put_nowait({"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {since} ({store.compacted_rv})")})
            watch.queue.put_nowait(None)
        else:
            for change in store.changes_since(int(since)):
                event = event_for(kind, namespace, selector, change)
                if event is not None:
                    watch.queue.put_nowait(event)
        self._watches.add(watch)
        timeout_s = float(query.get("timeoutSeconds") or 0) or None
        try:
            await self._stream(watch, response, timeout_s)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            return response  # the client went away, or drop_watches() aborted the connection
        finally:
            self._watches.discard(watch)
        return response

    async def _stream(self, watch: _Watch, response: web.StreamResponse, timeout_s: Optional[float]) -> None:
        """Write the watch's events until its timeout, an end marker (None) or the client going away (looked at
        every 0.1 s: a handler is not cancelled when its client disconnects); a BOOKMARK after every quiet
        ``bookmark_interval_s``."""
        clock = asyncio.get_running_loop().time
        deadline = None if timeout_s is None else clock() + timeout_s
        last_write = clock()
        while True:
            if watch.request.transport is None or watch.request.transport.is_closing():
                return
            if deadline is not None and clock() >= deadline:
                break
            try:
                event = await asyncio.wait_for(watch.queue.get(), 0.1)
            except asyncio.TimeoutError:
                if not watch.bookmarks or clock() - last_write < self.bookmark_interval_s:
                    continue
                event = self._bookmark_event(watch.kind)
            if event is None:
                if watch.request.transport is None or watch.request.transport.is_closing():
                    return
                break
            await response.write(json.dumps(event).encode() + b"\n")
            last_write = clock()
        await response.write_eof()
