"""``Gateway``: a real Envoy in front of a fleet, for clients that never import tritonmix (perf_analyzer, curl, the
C++ and Java clients, services behind a load balancer), driven by the control plane's plans.

    Gateway.start()
      control plane: its own ``ControlPlane`` in-process (127.0.0.1, a free port), or one named by ``control_plane``
      xDS folder: ``FileXds`` writes CDS, RDS and per-cluster EDS files; Envoy watches the folder (xds.py says why)
      Envoy: a child process (envoy.py), listening for KServe v2 HTTP/REST and gRPC, admin on 127.0.0.1
      follow thread, every plane tick:
          read Envoy's per-host counters (admin /clusters) -> a report (stats.py), POST /v1/sync, held by the plane
          until its next plan -> write the plan's weights and availability as EDS -> Envoy reloads them
          the next report leaves LEAD of an interval before the plane's next tick, as a tritonmix client's does
      a plane that does not answer: Envoy keeps the last plan (and its own health checks and outlier detection)
      and the follow thread retries every interval

Per model: an HTTP request's path names its model (/v2/models/<name>/...), so each model the fleet serves gets a
route and a cluster with that model's weights. A gRPC request carries the model name inside its protobuf body:
reading it would make Envoy buffer and parse every request (an ext_proc or Lua filter on the data path), so gRPC
follows the plan's default weights (the models' plans combined) and is counted under the fleet's model when it
serves only one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..control_plane.follower import LEAD
from ..control_plane.plane import ControlPlane, parse_address
from ..control_plane.report import fleet_fingerprint, http_call
from ..controller.plan import Plan
from ..errors import ConfigError, LaunchError
from .config import GatewaySettings, Upstream, bootstrap, inner_name
from .envoy import EnvoyProcess
from .stats import host_counts, report_body
from .xds import FileXds

__all__ = ["Gateway", "upstreams_of", "fleet_models"]

_log = logging.getLogger(__name__)


def _host_port(url: str) -> Tuple[str, int]:
    host, port = parse_address(url)
    if not port:
        raise ConfigError(f"endpoint address {url!r} has no port")
    return host, port


def upstreams_of(fleet: Any, http_urls: Optional[Mapping[str, str]] = None,
                 grpc_urls: Optional[Mapping[str, str]] = None) -> Tuple[Upstream, ...]:
    """Each endpoint's HTTP and gRPC addresses: its fleet URL for its own protocol, the other from ``http_urls`` /
    ``grpc_urls`` (by endpoint name). ConfigError when an endpoint has no HTTP address (the health checks use it)
    or the two addresses name different hosts."""
    out = []
    for e in fleet.endpoints:
        if e.url is None:
            raise ConfigError(f"endpoint '{e.name}' is local and not started: start the fleet first "
                              "(tritonmix fleet up FLEET --detach) or give its URL")
        http = e.url if e.protocol == "http" else (http_urls or {}).get(e.name)
        grpc = e.url if e.protocol == "grpc" else (grpc_urls or {}).get(e.name)
        if http is None:
            raise ConfigError(f"endpoint '{e.name}' has no HTTP address (its fleet URL is gRPC): the gateway's "
                              "health checks and HTTP listener need one; give it with --http-url NAME=HOST:PORT")
        host, http_port = _host_port(http)
        grpc_port = 0
        if grpc is not None:
            grpc_host, grpc_port = _host_port(grpc)
            if grpc_host != host:
                raise ConfigError(f"endpoint '{e.name}': HTTP on {host} and gRPC on {grpc_host} differ")
        out.append(Upstream(e.name, host, http_port, grpc_port))
    return tuple(out)


def fleet_models(upstreams: Sequence[Upstream], timeout_s: float = 2.0) -> Tuple[str, ...]:
    """The models the fleet's endpoints hold (Triton's repository index, every endpoint that answers), sorted."""
    names = set()
    for u in upstreams:
        try:
            status, body = http_call(f"http://{u.host}:{u.http_port}/v2/repository/index", method="POST",
                                     body=b"{}", timeout_s=timeout_s)
        except OSError:
            continue
        if status == 200:
            names.update(str(m["name"]) for m in json.loads(body) if isinstance(m, dict) and "name" in m)
    return tuple(sorted(names))


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux keeps one per thread, and threads it starts inherit
    it); nothing where the platform has no per-thread priority."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        _log.debug("gateway: thread priority unchanged: %s", exc)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Gateway:
    """Envoy in front of ``fleet`` (module docstring). ``start()`` returns once Envoy listens and holds the first
    configuration; ``http_url`` / ``grpc_url`` are then ``host:port`` (tritonclient's form) and ``admin_url`` the
    loopback admin. ``http_port`` / ``grpc_port`` 0 pick free ports. A context manager; ``stop()`` ends Envoy and
    the in-process plane."""

    def __init__(self, fleet: Any, *, http_port: int = 8000, grpc_port: int = 8001, host: str = "127.0.0.1",
                 control_plane: Optional[str] = None, token: Optional[str] = None,
                 http_urls: Optional[Mapping[str, str]] = None, grpc_urls: Optional[Mapping[str, str]] = None,
                 models: Optional[Sequence[str]] = None, work_dir: Optional[str] = None,
                 envoy_concurrency: int = 0, static_weights: Optional[Sequence[float]] = None,
                 **settings: Any) -> None:
        """``settings``: fields of ``GatewaySettings`` (timeouts, retries, health checks, access_log, TLS).
        ``static_weights`` (one per endpoint): serve these weights and follow no plane (a hand-configured
        weighted Envoy, as an ALB with fixed target-group weights: the paper's baseline)."""
        self.fleet = fleet
        self.upstreams = upstreams_of(fleet, http_urls, grpc_urls)
        self.names = tuple(u.name for u in self.upstreams)
        unknown = set(settings) - {f.name for f in dataclasses.fields(GatewaySettings)}
        if unknown:
            raise ConfigError(f"unknown gateway setting(s): {', '.join(sorted(unknown))}")
        if bool(settings.get("tls_cert")) != bool(settings.get("tls_key")):
            raise ConfigError("TLS needs both a certificate (tls_cert) and its key (tls_key)")
        self.settings = GatewaySettings(host=host, http_port=http_port or _free_port(host),
                                        grpc_port=grpc_port or _free_port(host), **settings)
        self._models = tuple(models) if models is not None else None
        if static_weights is not None and (len(static_weights) != len(self.upstreams) or
                                           any(not w >= 0 for w in static_weights) or not any(static_weights)):
            raise ConfigError(f"static_weights must be {len(self.upstreams)} numbers >= 0, not all 0")
        self._static = tuple(float(w) for w in static_weights) if static_weights is not None else None
        if self._static is not None:  # fixed weights and no plan: no limits to enforce
            self.settings = dataclasses.replace(self.settings, enforce_limits=False)
        if len(self.upstreams) < 2:  # a full endpoint's request has nowhere else to go: it would queue there
            # anyway (priority 1 is the same endpoint uncapped), so caps would only add the inner hop
            self.settings = dataclasses.replace(self.settings, enforce_limits=False)
        self._remote_plane = control_plane
        self._token = token
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tritonmix-gateway-"))
        self._envoy_concurrency = envoy_concurrency
        self.plane: Optional[ControlPlane] = None
        self.envoy: Optional[EnvoyProcess] = None
        self.xds: Optional[FileXds] = None
        self.models: Tuple[str, ...] = ()
        self._stop = threading.Event()
        self._envoy_thread: Optional[threading.Thread] = None
        self._follow_thread: Optional[threading.Thread] = None
        self._client = f"gateway/{socket.gethostname()[:48]}/{os.getpid()}/{os.urandom(3).hex()}"
        self.plans_applied = 0
        self.plan_errors = 0
        self.last_plan: Optional[Plan] = None
        #: the epoch of the plane whose plan was applied last (a restarted plane has a new one)
        self.plane_epoch = ""
        self._applied_at = math.nan
        self._limits: Dict[str, int] = {}

    # ---- addresses -------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.settings.host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    @property
    def admin_url(self) -> str:
        return self.envoy.admin_url if self.envoy is not None else ""

    @property
    def plane_address(self) -> str:
        return self._remote_plane or (self.plane.address if self.plane is not None else "")

    # ---- life cycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "Gateway":
        if self._envoy_thread is not None:
            return self
        self.models = self._models if self._models is not None else fleet_models(self.upstreams)
        self.xds = FileXds(self.work_dir / "xds", self.upstreams, self.models, self.settings)
        self.xds.initial()
        if self._static is not None:
            n = len(self.upstreams)
            self.xds.apply_weights({None: self._static, **{m: self._static for m in self.models}}, (True,) * n,
                                   "0")
        config = self.work_dir / "bootstrap.json"
        config.write_text(json.dumps(bootstrap(self.settings, str(self.xds.folder), str(self.xds.cds_path),
                                               str(self.xds.rds_path), self.upstreams, self.models), indent=1))
        self.envoy = EnvoyProcess(config, self.work_dir, concurrency=self._envoy_concurrency)
        started: "threading.Event" = threading.Event()
        failure: List[BaseException] = []

        def own_envoy() -> None:  # Envoy's death signal follows this thread: it lives until stop()
            try:
                assert self.envoy is not None
                self.envoy.start()
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
            started.set()
            if not failure:
                self._stop.wait()
                self.envoy.stop()

        self._envoy_thread = threading.Thread(target=own_envoy, name="tritonmix-gateway-envoy", daemon=True)
        self._envoy_thread.start()
        started.wait()
        if failure:
            self._envoy_thread = None
            raise failure[0]
        try:
            self._wait_listening()
            if self._static is not None:
                return self
            if self._remote_plane is None:
                self.plane = self._start_plane("127.0.0.1:0")
        except BaseException:
            self.stop()
            raise
        self._follow_thread = threading.Thread(target=self._follow, name="tritonmix-gateway-follow", daemon=True)
        self._follow_thread.start()
        _log.info("gateway: HTTP %s, gRPC %s, admin %s, plane %s", self.http_url, self.grpc_url, self.admin_url,
                  self.plane_address)
        return self

    def _wait_listening(self, timeout_s: float = 10.0) -> None:
        """Until both listeners accept connections (Envoy answers /ready before its dynamic clusters warm)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                stats = self.envoy.admin("/stats?filter=^cluster_manager.(warming|active)_clusters$") \
                    if self.envoy else ""
            except OSError:
                stats = ""
            counts = dict(line.split(": ", 1) for line in stats.strip().splitlines() if ": " in line)
            if counts.get("cluster_manager.warming_clusters") == "0" and \
                    int(counts.get("cluster_manager.active_clusters", "0")) >= 2 + len(self.models):
                return
            time.sleep(0.05)
        raise LaunchError(f"gateway: Envoy did not load its clusters in {timeout_s:.0f} s (log: "
                          f"{self.envoy.log_path if self.envoy else '?'})")

    def stop(self) -> None:
        """Stop following, say goodbye to the plane, stop Envoy and the in-process plane; a second call does
        nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._follow_thread is not None:
            self._follow_thread.join(10)
        if self._envoy_thread is not None:
            self._envoy_thread.join(10)
        if self.plane is not None:
            self.plane.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    close = stop

    def restart_plane(self) -> None:
        """Stop the in-process plane and start a new one on the same address (a fault drill: Envoy keeps the last
        plan meanwhile, and the gateway follows the new plane's first plan)."""
        if self.plane is None:
            raise ConfigError("the gateway follows a remote control plane; restart that one instead")
        address = self.plane.address
        self.plane.stop()
        self.plane = self._start_plane(address)

    def _start_plane(self, listen: str) -> ControlPlane:
        """The in-process plane, started from a thread at the gateway's ``plane_nice``: its threads (HTTP, ticks,
        scrapes) inherit that nice value and yield the CPU to Envoy, Triton and the clients when they contend."""
        out: List[Any] = []

        def start() -> None:
            _lower_priority(self.settings.plane_nice)
            try:
                out.append(ControlPlane(self.fleet, listen=listen).start())
            except BaseException as exc:  # noqa: BLE001 - raised by the caller
                out.append(exc)

        starter = threading.Thread(target=start, name="tritonmix-gateway-plane-start", daemon=True)
        starter.start()
        starter.join()
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    # ---- following the plane -----------------------------------------------------------------------------------
    def _plane_url(self) -> str:
        address = self.plane_address
        return address if address.startswith(("http://", "https://")) else "http://" + address

    def _follow(self) -> None:
        """The follow loop (module docstring)."""
        _lower_priority(self.settings.plane_nice)
        after, epoch, seq = 0, "", 0
        fingerprint = fleet_fingerprint(self.names)
        only = self.models[0] if len(self.models) == 1 else None
        inner = {m: [inner_name("in", m, n) for n in self.names] for m in self.models} \
            if self.settings.enforce_limits else {}
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        interval_s = float(self.fleet.controller.interval_s)
        failing = False
        while not self._stop.is_set():
            try:
                assert self.envoy is not None
                counts = host_counts(self.envoy.admin_json("/clusters?format=json"), self.names)
                age = time.monotonic() - self._applied_at if self.plans_applied else -1.0
                body = report_body(counts, self.names, self.models, self._client, fingerprint, seq, age, only,
                                   inner)
                query = urllib.parse.urlencode({"after": after, "epoch": epoch, "wait": 2 * interval_s})
                status, answer = http_call(f"{self._plane_url()}/v1/sync?{query}", method="POST", body=body,
                                           headers=headers, timeout_s=2 * interval_s + 2.0)
                seq += 1
            except (OSError, ValueError) as exc:
                status, answer = 0, str(exc).encode()
            if status == 200:
                msg = json.loads(answer)
                self._apply(Plan.from_dict(msg["plan"]))
                after, epoch = int(msg["generation"]), str(msg["epoch"])
                self.plane_epoch = epoch
                interval_s = float(msg.get("interval_s", interval_s))
                failing = False
                self._stop.wait(max(0.0, float(msg.get("next_tick_s", 0.0)) - LEAD * interval_s))
            elif status == 204:
                continue
            else:
                if not failing:
                    _log.warning("gateway: the control plane at %s does not answer (%s %s); Envoy keeps the last "
                                 "plan", self.plane_address, status, answer[:200].decode(errors="replace"))
                failing = True
                self._stop.wait(interval_s)
        try:  # goodbye: the plane drops this client at once
            http_call(f"{self._plane_url()}/v1/sync?bye=1", method="POST", headers=headers, timeout_s=1.0,
                      body=report_body(host_counts({}, self.names), self.names, (), self._client,
                                       fingerprint, seq, -1.0, None))
        except OSError:
            pass

    def _apply(self, plan: Plan) -> None:
        assert self.xds is not None
        try:
            self.xds.apply(plan)
        except (OSError, ValueError) as exc:
            self.plan_errors += 1
            _log.warning("gateway: plan %d not applied: %s", plan.generation, exc)
            return
        self._set_limits(plan)
        self.last_plan = plan
        self.plans_applied += 1
        self._applied_at = time.monotonic()

    def _set_limits(self, plan: Plan) -> None:
        """The plan's in-flight limits as Envoy runtime values (the caps of the inner hops, ``config``), written
        through the admin when they changed."""
        assert self.xds is not None and self.envoy is not None
        limits = self.xds.limits(plan)
        changed = {k: v for k, v in limits.items() if self._limits.get(k) != v}
        if not changed:
            return
        try:
            self.envoy.admin("/runtime_modify?" + urllib.parse.urlencode(changed), method="POST")
        except OSError as exc:
            _log.warning("gateway: plan %d's limits not set: %s", plan.generation, exc)
            return
        self._limits.update(changed)

    # ---- what Envoy holds --------------------------------------------------------------------------------------
    def envoy_generation(self) -> Dict[str, int]:
        """Per cluster, the plan generation whose endpoints Envoy holds now (the ``tritonmix.generation``
        metadata of its endpoints in Envoy's config dump, the plan that last changed them; where that file is still
        the one written, the plan applied last, whose content for the cluster is the same: ``FileXds.held``; 0
        before the first plan); clusters without endpoints or without that metadata are left out."""
        assert self.envoy is not None
        dump = self.envoy.admin_json("/config_dump?include_eds&resource=dynamic_endpoint_configs")
        out = {}
        for item in dump.get("configs", []):
            config = item.get("endpoint_config", {})
            versions = [lb["metadata"]["filter_metadata"]["tritonmix"].get("generation", "0")
                        for group in config.get("endpoints", []) for lb in group.get("lb_endpoints", [])
                        if "tritonmix" in lb.get("metadata", {}).get("filter_metadata", {})]
            # a cluster without endpoints (gRPC where no endpoint gave a gRPC port) holds no plan, nor does an
            # inner cluster of a capped model (a static address, no plan's metadata)
            if versions:
                name = config.get("cluster_name", "")
                held = self.xds.held(name, min(versions, key=lambda v: int(v) if str(v).isdigit() else 0)) \
                    if self.xds is not None else "0"
                out[name] = int(held) if str(held).isdigit() else 0
        return out

    def envoy_limits(self) -> Dict[str, int]:
        """The in-flight caps set in Envoy's runtime (``config.limit_runtime`` keys), as last written."""
        return dict(self._limits)

    def envoy_weights(self) -> Dict[str, Dict[str, Tuple[int, int, str]]]:
        """Per cluster and endpoint name: (weight, priority, health flags) as Envoy's admin shows them (a host at two
    priorities, as a capped model cluster lists them: the first)."""
        assert self.envoy is not None
        out: Dict[str, Dict[str, Tuple[int, int, str]]] = {}
        for cluster in self.envoy.admin_json("/clusters?format=json").get("cluster_statuses", []):
            hosts = out.setdefault(cluster.get("name", ""), {})
            for host in cluster.get("host_statuses", []):
                health = host.get("health_status", {})
                eds = health.get("eds_health_status", "HEALTHY")
                flags = ",".join([k for k, v in health.items() if v is True] +
                                 ([f"eds_{eds.lower()}"] if eds != "HEALTHY" else [])) or "healthy"
                name, priority = host.get("hostname", ""), int(host.get("priority", 0))
                if name not in hosts or priority < hosts[name][1]:  # a capped cluster lists a host twice
                    hosts[name] = (int(host.get("weight", 1)), priority, flags)
        return out
