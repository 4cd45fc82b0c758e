"""KubernetesSource: a fleet's endpoints, followed live from the EndpointSlices and Services of its pools.

With the official ``kubernetes`` client, two threads each list and then watch one kind in the namespace:

    Services        labelSelector tritonmix.io/fleet=<fleet>      a pool each (price, accelerator, ... annotations)
    EndpointSlices  labelSelector kubernetes.io/service-name       the pools' endpoints (addresses, conditions, ports)

Each follows the API's list + watch rules (as client-go's reflector does):

    list            in chunks of page_size (limit/continue); the list's resourceVersion starts the watch; a
                    continue token that expired (410) restarts the list
    watch           from the last resourceVersion seen (an event's object, or a BOOKMARK), allowWatchBookmarks,
                    timeoutSeconds = watch_timeout_s x [1, 2); a watch that ends cleanly is resumed at once
    410 Gone        (an ERROR event or the HTTP status) the resourceVersion is too old: list again
    anything else   (connection refused or dropped, a 5xx, a silent stream past read_timeout_s) reconnect after a
                    backoff: backoff_initial_s doubling up to backoff_max_s, times a jitter in [0.5, 1]; the first
                    good answer resets it; a read timeout reconnects at once

After both kinds are listed, and after every event that changes the result, the whole set of endpoints (names sorted)
goes to ``on_change`` if it differs from the last one sent; calls are serialised by one lock. Bad input changes
nothing else and is logged once per object and problem: a Service whose annotations cannot be read keeps its last
good reading (none: its endpoints are not announced), a slice whose Service is not in the fleet or that cannot be
read is left out, a null endpoints list is empty.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..discovery.contract import EndpointState, OnChange
from ..errors import ConfigError
from . import labels
from .pools import PoolError, PoolInfo, SliceEndpoint, endpoints_from_slice, pool_from_service
from .settings import KubernetesSettings

__all__ = ["KubernetesSource", "load_configuration", "SERVICEACCOUNT_DIR"]

log = logging.getLogger(__name__)

#: where a pod finds its service account's token and the cluster's CA
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_CONNECT_TIMEOUT_S = 5.0


def load_configuration(kubeconfig: Optional[str] = None, context: Optional[str] = None,
                       in_cluster: Optional[bool] = None, serviceaccount_dir: str = SERVICEACCOUNT_DIR) -> Any:
    """A ``kubernetes.client.Configuration`` from the client's own loaders: in-cluster (the pod's service account,
    ``KUBERNETES_SERVICE_HOST``/``_PORT``) when ``in_cluster`` is true, or when it is None, no kubeconfig is named and
    ``KUBERNETES_SERVICE_HOST`` is set; else the kubeconfig (``kubeconfig``, else ``$KUBECONFIG``, else
    ``~/.kube/config``). ConfigError naming the cause when neither works."""
    try:
        from kubernetes import client, config  # noqa: PLC0415 - the Kubernetes client only where discovery is used
        from kubernetes.config.incluster_config import InClusterConfigLoader  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("endpoints.kubernetes: discovery needs the kubernetes package "
                          "(pip install 'tritonmix[k8s]')") from exc

    configuration = client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            folder = Path(serviceaccount_dir)
            InClusterConfigLoader(token_filename=str(folder / "token"),
                                  cert_filename=str(folder / "ca.crt")).load_and_set(configuration)
        else:
            path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            config.load_kube_config(config_file=os.path.expanduser(path), context=context,
                                    client_configuration=configuration, persist_config=False)
    except (config.ConfigException, OSError) as exc:
        how = "in-cluster config" if in_cluster else "kubeconfig"
        raise ConfigError(f"endpoints.kubernetes: cannot load the {how}: {exc}") from exc
    configuration.retries = 0  # the source's own loop reconnects, with backoff; urllib3 retrying too would stack
    return configuration


class KubernetesSource:
    """An ``EndpointSource`` (``tritonmix.discovery``) over the EndpointSlices of one fleet's pools (see the module
    docstring for the protocol; ``KubernetesSettings`` for each setting)."""

    def __init__(self, settings: KubernetesSettings, *, serviceaccount_dir: str = SERVICEACCOUNT_DIR,
                 seed: Optional[int] = None) -> None:
        self.settings = settings
        self._serviceaccount_dir = serviceaccount_dir
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._services: Dict[str, Dict[str, Any]] = {}
        self._slices: Dict[str, Dict[str, Any]] = {}
        self._pools: Dict[str, PoolInfo] = {}      # Service name -> its last good reading
        self._listed: Dict[str, bool] = {"Service": False, "EndpointSlice": False}
        self._problems: Dict[str, str] = {}       # object -> the problem last logged for it
        self._slice_cache: Dict[str, Tuple[Any, PoolInfo, Tuple[EndpointState, ...]]] = {}
        self._last: Optional[Tuple[EndpointState, ...]] = None
        self._on_change: Optional[OnChange] = None
        self._threads: List[threading.Thread] = []
        self._watches: Dict[str, Any] = {}
        self._versions: Dict[str, Optional[str]] = {}  # kind -> the resourceVersion to watch from (None: list)
        self._failures: Dict[str, int] = {}  # kind -> failures since its last good answer (the backoff's exponent)
        self._api_client: Any = None
        #: per kind: lists served, watches opened, relists after 410, reconnects after errors (for tests and status)
        self.counters: Dict[str, int] = {"lists": 0, "watches": 0, "relists": 0, "reconnects": 0, "changes": 0}

    @classmethod
    def from_settings(cls, settings: KubernetesSettings, **kwargs: Any) -> "KubernetesSource":
        return cls(settings, **kwargs)

    # -- EndpointSource --------------------------------------------------------------------------------------
    def start(self, on_change: OnChange) -> None:
        """Load the client configuration (ConfigError if it cannot be), then list and watch on two threads."""
        s = self.settings
        configuration = load_configuration(s.kubeconfig, s.context, s.in_cluster, self._serviceaccount_dir)
        from kubernetes import client  # noqa: PLC0415 - importable: load_configuration checked
        self._api_client = client.ApiClient(configuration)
        self._on_change = on_change
        core, discovery = client.CoreV1Api(self._api_client), client.DiscoveryV1Api(self._api_client)
        kinds = (("Service", core.list_namespaced_service, f"{labels.FLEET_LABEL}={s.fleet}"),
                 ("EndpointSlice", discovery.list_namespaced_endpoint_slice, labels.SERVICE_NAME_LABEL))
        for kind, list_fn, selector in kinds:
            thread = threading.Thread(target=self._run, args=(kind, list_fn, selector), daemon=True,
                                      name=f"tritonmix-k8s-{kind.lower()}")
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        # Watch.stop() shuts the stream's socket; a watch that was opening when the flag was set has no socket yet,
        # so stop again until each thread is out
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S + 1.0
        for thread in self._threads:
            while thread.is_alive() and thread is not threading.current_thread() and time.monotonic() < deadline:
                for watch in list(self._watches.values()):
                    watch.stop()
                thread.join(0.05)
        if self._api_client is not None:
            self._api_client.close()

    def wait_synced(self, timeout_s: float) -> bool:
        """Wait until both kinds were listed and the first set was sent; False on timeout."""
        return self._synced.wait(timeout_s)

    def current(self) -> Tuple[EndpointState, ...]:
        """The set last sent to ``on_change`` (empty before the first)."""
        with self._lock:
            return self._last or ()

    # -- one kind: list, then watch, forever -----------------------------------------------------------------
    def _run(self, kind: str, list_fn: Callable[..., Any], selector: str) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import ReadTimeoutError  # noqa: PLC0415

        while not self._stopping.is_set():
            try:
                if self._versions.get(kind) is None:
                    self._versions[kind] = self._list(kind, list_fn, selector)
                self._watch(kind, list_fn, selector)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s watch: resourceVersion %s expired (410 Gone): listing again", kind,
                             self._versions.get(kind))
                    self.counters["relists"] += 1
                    self._versions[kind] = None
                    continue
                self._backoff(kind, f"HTTP {exc.status} {exc.reason}")
            except ReadTimeoutError:
                log.debug("%s watch silent for %.0f s: reconnecting", kind, self.settings.read_timeout_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: reconnect, the loop must live on
                if self._stopping.is_set():
                    break
                self._backoff(kind, f"{type(exc).__name__}: {exc}")

    def _backoff(self, kind: str, cause: str) -> None:
        """Wait before the next try: doubling with each failure since this kind's last good answer (a list, or a
        watch event or bookmark), with jitter."""
        s = self.settings
        failures = self._failures.get(kind, 0)
        delay_s = min(s.backoff_max_s, s.backoff_initial_s * 2 ** failures) * self._random.uniform(0.5, 1.0)
        log.warning("%s list/watch failed (%s): retrying in %.2f s", kind, cause, delay_s)
        self.counters["reconnects"] += 1
        self._failures[kind] = failures + 1
        self._stopping.wait(delay_s)

    def _list(self, kind: str, list_fn: Callable[..., Any], selector: str) -> str:
        """List every object in chunks; replace this kind's objects with them; the list's resourceVersion."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        items: Dict[str, Dict[str, Any]] = {}
        token: Optional[str] = None
        while True:
            kwargs: Dict[str, Any] = {"label_selector": selector, "limit": self.settings.page_size}
            if token:
                kwargs["_continue"] = token
            response = list_fn(self.settings.namespace, _preload_content=False,
                               _request_timeout=(_CONNECT_TIMEOUT_S, self.settings.read_timeout_s), **kwargs)
            if not 200 <= response.status < 300:
                raise ApiException(http_resp=response)
            body = json.loads(response.data)
            for item in body.get("items") or []:
                items[item["metadata"]["name"]] = item
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.counters["lists"] += 1
        self._failures[kind] = 0
        with self._lock:
            if kind == "Service":
                self._services = items
                for name in [n for n in self._pools if n not in items]:
                    del self._pools[name]
                for item in items.values():
                    self._read_service(item)
            else:
                self._slices = items
            self._listed[kind] = True
            self._publish()
        return str(meta["resourceVersion"])

    def _watch(self, kind: str, list_fn: Callable[..., Any], selector: str) -> None:
        """Watch from this kind's last resourceVersion until the stream ends, keeping that version current (an
        event's object or a BOOKMARK moves it) so that a dropped stream resumes where it stopped."""
        from kubernetes import watch  # noqa: PLC0415

        stream = watch.Watch(return_type="object")  # raw dicts: this module reads them, no model validation
        self._watches[kind] = stream
        self.counters["watches"] += 1
        version = self._versions[kind]
        try:
            for event in stream.stream(
                    list_fn, self.settings.namespace, label_selector=selector, resource_version=version,
                    allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout_s(),
                    _request_timeout=(_CONNECT_TIMEOUT_S, self.settings.read_timeout_s)):
                if self._stopping.is_set():
                    break
                raw = event.get("raw_object") or {}
                self._failures[kind] = 0
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, event["type"], raw)
                version = (raw.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._versions[kind] = str(version)
        finally:
            self._watches.pop(kind, None)

    def _watch_timeout_s(self) -> int:
        """watch_timeout_s x a jitter in [1, 2), as client-go spreads its watches' ends, so that many watchers do not
        reconnect in step."""
        return max(1, int(self.settings.watch_timeout_s * self._random.uniform(1.0, 2.0)))

    # -- the state -------------------------------------------------------------------------------------------
    def _apply(self, kind: str, event_type: str, raw: Dict[str, Any]) -> None:
        name = (raw.get("metadata") or {}).get("name")
        if not name:
            log.warning("%s %s event without metadata.name: ignored", kind, event_type)
            return
        with self._lock:
            objects = self._services if kind == "Service" else self._slices
            if event_type == "DELETED":
                objects.pop(name, None)
                if kind == "Service":
                    self._pools.pop(name, None)
                self._problems.pop(f"{kind}/{name}", None)
            else:
                objects[name] = raw
                if kind == "Service":
                    self._read_service(raw)
            self._publish()

    def _read_service(self, service: Dict[str, Any]) -> None:
        name = service["metadata"]["name"]
        try:
            self._pools[name] = pool_from_service(service)
            self._problems.pop(f"Service/{name}", None)
        except PoolError as exc:
            kept = "keeping its last good reading" if name in self._pools else "its endpoints are not announced"
            self._problem(f"Service/{name}", f"{exc}; {kept}")

    def _problem(self, key: str, message: str) -> None:
        if self._problems.get(key) != message:
            self._problems[key] = message
            log.warning("%s", message)

    def _states(self) -> Tuple[EndpointState, ...]:
        found: Dict[str, EndpointState] = {}
        cache, self._slice_cache = self._slice_cache, {}
        for slice_name, slice_ in sorted(self._slices.items()):
            key = f"EndpointSlice/{slice_name}"
            service = ((slice_.get("metadata") or {}).get("labels") or {}).get(labels.SERVICE_NAME_LABEL)
            pool = self._pools.get(service or "")
            if pool is None:
                why = ("its Service has no valid pool annotations" if service in self._services
                       else f"Service {service!r} is not in fleet {self.settings.fleet!r}")
                self._problem(key, f"EndpointSlice {self.settings.namespace}/{slice_name}: {why}; left out")
                continue
            states = self._slice_states(slice_name, slice_, pool, cache)
            for state in states:
                other = found.get(state.name)
                # the same pod in two slices (while the slice controller moves it): the most available copy wins
                if other is None or (state.serving, state.ready) > (other.serving, other.ready):
                    found[state.name] = state
        for key in [k for k in self._problems if k.startswith("EndpointSlice/") and k[14:] not in self._slices]:
            del self._problems[key]  # a slice that went: a new one of that name is logged afresh
        return tuple(found[name] for name in sorted(found))

    def _slice_states(self, name: str, slice_: Dict[str, Any], pool: PoolInfo,
                      cache: Dict[str, Tuple[Any, PoolInfo, Tuple[EndpointState, ...]]]) -> Tuple[EndpointState, ...]:
        """One slice's endpoints, read again only when the slice (its resourceVersion) or its pool changed."""
        version = (slice_.get("metadata") or {}).get("resourceVersion")
        hit = cache.get(name)
        if hit is not None and version is not None and hit[0] == version and hit[1] == pool:
            self._slice_cache[name] = hit
            return hit[2]
        key = f"EndpointSlice/{name}"
        try:
            endpoints: Sequence[SliceEndpoint] = endpoints_from_slice(slice_, self.settings.protocol)
        except PoolError as exc:
            self._problem(key, f"{exc}; left out")
            return ()
        if slice_.get("endpoints") is None:
            self._problem(key, f"EndpointSlice {self.settings.namespace}/{name}: 'endpoints' is null (no endpoints)")
        else:
            self._problems.pop(key, None)
        states = tuple(EndpointState(e.spec(pool, self.settings.protocol), e.ready, e.terminating) for e in endpoints)
        self._slice_cache[name] = (version, pool, states)
        return states

    def _publish(self) -> None:
        """Send the whole set if both kinds are listed and it changed (called with the lock held)."""
        if not all(self._listed.values()) or self._stopping.is_set():
            return
        states = self._states()
        if states == self._last:
            return
        self._last = states
        self.counters["changes"] += 1
        assert self._on_change is not None
        try:
            self._on_change(states)
        except Exception:  # noqa: BLE001 - a consumer's bug must not end the watch
            log.exception("discovery on_change failed")
        self._synced.set()
