"""Envoy's configuration for the gateway, as plain JSON values (Envoy's v3 API; Envoy itself validates them, and
``tests/test_gateway_config.py`` runs ``envoy --mode validate`` on a bootstrap).

    bootstrap    admin (127.0.0.1 only), two static listeners (KServe v2 HTTP/REST; gRPC over h2c), CDS and RDS
                 read from files, each in a watched folder of its own (``xds.FileXds``)
    CDS          per protocol, one cluster per planned model and a default one: EDS from a file each, weighted
                 least request, active health checks (the model's readiness), outlier detection, a retry budget
    RDS (HTTP)   /v2/models/<name>[/...] -> that model's cluster; anything else (health, metadata, repository)
                 -> the default cluster. gRPC: every request -> the gRPC default cluster (the model name is inside
                 the protobuf body: reading it would buffer every request in the proxy, see docs/gateway.md)
    EDS          per cluster, from the plan: endpoints the plan weights at priority 0 with integer weights, the
                 other available ones at priority 1 (Envoy sends there only when priority 0 is short of healthy
                 hosts), the unavailable ones (ejected, not ready) marked UNHEALTHY at priority 1
    limits       (``enforce_limits``, HTTP model clusters) the plan's per-endpoint in-flight limits, enforced by a
                 second hop inside the same Envoy, because Envoy never retries a request its own circuit breaker
                 refused and has no per-host request cap that sends a request elsewhere:

        model cluster (picks: weights, least request) ──► internal listener cap~<m>~<e>  (route priority DEFAULT)
            priority 0: the planned endpoints, capped     │   inner cluster in~<m>~<e>: the endpoint alone, max_requests
            priority 1: every available one, uncapped ──► all~<m>~<e> (HIGH: no cap)  = the plan's limit (runtime,
                                                          │   set through the admin), health checks, outlier detection
        a full endpoint: the inner hop answers 503 with x-envoy-overloaded (nothing reached the server); the model's
        route retries it on another host (previous_hosts) at once, and after every planned endpoint was tried, in
        priority 1, where the request queues where the weights say (the in-process dispatcher's rule: overflow to
        one under its limit, else the choice stands). An inner hop that could not reach its server (refused, reset,
        no healthy host) marks its 503 with x-tritonmix-retriable, retried the same way, and so is Triton's 500 for
        a request whose python-backend stub died (``STUB_FAILED_LUA``).

Each endpoint carries in its metadata the generation of the plan that last changed its cluster's file
(``tritonmix.generation``: Envoy's config dump shows it, so a reader can tell which plan Envoy holds). Weights: Envoy wants integers >= 1; a plan weight w in [0, 1]
becomes max(1, round(w x WEIGHT_SCALE)).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["GatewaySettings", "Upstream", "bootstrap", "clusters", "route_config", "load_assignment",
           "cluster_name", "inner_name", "limit_runtime", "WEIGHT_SCALE", "NO_LIMIT", "envoy_weights"]

WEIGHT_SCALE = 1000
#: the inner hop's request cap where the plan sets none
NO_LIMIT = 1_000_000
#: the header an inner hop adds to a 503 that is safe to send elsewhere: the request never reached the server, or
#: the server's python-backend stub died before answering it (``STUB_FAILED_LUA``)
RETRIABLE = "x-tritonmix-retriable"
#: Triton's python backend answers 500 "Stub process '<model>_0_1' is not healthy." for the requests its stub held
#: when the stub stopped answering (a server frozen for longer than the stub's heartbeat): nothing was computed, so
#: the inner hop turns that answer, and only that one, into a retriable 503. It runs on 500s alone (a composite
#: filter instantiates it for them, ``_stub_filter``) and reads their body; a
#: client's malformed body (Triton's 500 "failed to parse the request JSON buffer") stays a 500, is not retried
#: and ejects nothing.
STUB_FAILED_LUA = """
function envoy_on_response(handle)
  if handle:headers():get(":status") ~= "500" then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, math.min(body:length(), 2048))
  if string.find(text, "Stub process", 1, true) and string.find(text, "is not healthy", 1, true) then
    handle:headers():replace(":status", "503")
    handle:headers():add("%s", "1")
  end
end
""" % RETRIABLE
_CLUSTER_T = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_CLA_T = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_ROUTES_T = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM_T = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER_T = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_BUFFER_T = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
_HTTP_OPTS_T = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_T = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_FILE_LOG_T = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
_PREVIOUS_HOSTS_T = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_LUA_T = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
_MATCHER_T = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
_COMPOSITE_T = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"
_EXECUTE_T = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
_STATUS_INPUT_T = "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput"
_INTERNAL_T = "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
_PREVIOUS_PRIORITIES_T = \
    "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    """How the gateway's Envoy behaves (times in seconds). The defaults suit a local fleet; ``timeout_s`` bounds a
    whole request (a Stable Diffusion request may take many seconds)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    admin_port: int = 0
    timeout_s: float = 60.0
    connect_timeout_s: float = 0.25
    retries: int = 3
    retry_backoff_s: float = 0.005
    retry_budget_percent: float = 20.0
    retry_budget_min_concurrency: int = 16
    health_interval_s: float = 0.5
    health_timeout_s: float = 0.25
    unhealthy_threshold: int = 2
    outlier_interval_s: float = 0.5
    outlier_base_ejection_s: float = 2.0
    max_request_bytes: int = 64 << 20         # 0: no limit (no buffer filter)
    active_request_bias: float = 1.0
    enforce_limits: bool = True               # the plan's in-flight limits on HTTP model clusters (module doc;
                                              # ``Gateway`` turns them off for a fleet of one endpoint)
    retry_stub_failures: bool = True          # with enforce_limits: a dead python-backend stub's 500 is retried
    plane_nice: int = 10                      # the in-process plane's and the follow thread's nice value, added
                                              # (0: as the gateway's): they yield the CPU to the data path
    access_log: Optional[str] = None          # a file path; None: no access log
    tls_cert: Optional[str] = None            # downstream TLS on both listeners (PEM files)
    tls_key: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One fleet endpoint as Envoy reaches it: host and ports (0: that protocol is not served there)."""

    name: str
    host: str
    http_port: int
    grpc_port: int


def cluster_name(protocol: str, model: Optional[str]) -> str:
    """``http~default``, ``http~m~<model>``: the model name with characters Envoy's stat names dislike replaced
    (a model name is at most 256 characters; Envoy's cluster names are free-form strings)."""
    if model is None:
        return f"{protocol}~default"
    return f"{protocol}~m~" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def _duration(seconds: float) -> str:
    return f"{seconds:.6f}s"


def _source(path: str, folder: str = "") -> Dict[str, Any]:
    """A file source, watched in the file's own folder: Envoy reloads every source that watches a folder when any
    file is moved into it, so with all files in one folder each EDS write reloaded CDS, RDS and every EDS file
    (``folder`` is kept for callers and ignored)."""
    del folder
    return {"resource_api_version": "V3", "path_config_source": {
        "path": path, "watched_directory": {"path": os.path.dirname(path) or "."}}}


def inner_name(kind: str, model: str, endpoint: str) -> str:
    """The inner hop of a capped model cluster (module docstring): ``cap~<m>~<e>`` and ``all~<m>~<e>`` (the capped
    and the uncapped internal listener), ``in~<m>~<e>`` (the cluster both lead to)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", model), re.sub(r"[^A-Za-z0-9_.-]", "_", endpoint)
    return f"{kind}~{clean[0]}~{clean[1]}"


def limit_runtime(model: str, endpoint: str) -> str:
    """The runtime key of one endpoint's cap for ``model`` (Envoy's circuit_breakers.<cluster>.<priority>.*)."""
    return f"circuit_breakers.{inner_name('in', model, endpoint)}.default.max_requests"


def bootstrap(s: GatewaySettings, folder: str, cds_path: str, rds_path: str, upstreams: Sequence[Upstream] = (),
              models: Sequence[str] = ()) -> Dict[str, Any]:
    """Envoy's bootstrap: admin on loopback, the two listeners, CDS and RDS from files in ``folder``; with
    ``enforce_limits`` the internal listeners of the capped model clusters; a runtime layer the admin writes (the
    caps)."""
    listeners = [_listener("http", s, _source(rds_path, folder)), _listener("grpc", s, None)]
    out: Dict[str, Any] = {
        "node": {"id": "tritonmix-gateway", "cluster": "tritonmix"},
        "admin": {"address": _address("127.0.0.1", s.admin_port)},
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        "static_resources": {"listeners": listeners},
        "dynamic_resources": {"cds_config": _source(cds_path, folder)},
    }
    if s.enforce_limits and models:
        out["bootstrap_extensions"] = [{"name": "envoy.bootstrap.internal_listener",
                                        "typed_config": {"@type": _INTERNAL_T}}]
        for model in models:
            for u in upstreams:
                cluster = inner_name("in", model, u.name)
                listeners.append(_inner_listener(inner_name("cap", model, u.name), cluster, "DEFAULT", s))
                listeners.append(_inner_listener(inner_name("all", model, u.name), cluster, "HIGH", s))
    return out


def _inner_listener(name: str, cluster: str, priority: str, s: GatewaySettings) -> Dict[str, Any]:
    """One way into an inner cluster: routes everything there at ``priority`` (DEFAULT: capped, HIGH: not), no
    retries; a 503 for a request that never reached the server carries ``RETRIABLE``, and so does a dead stub's
    500 turned into a 503 (``STUB_FAILED_LUA``)."""
    filters = [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_T}}]
    if s.retry_stub_failures:
        filters.insert(0, _stub_filter())
    hcm = {"@type": _HCM_T, "stat_prefix": "inner", "codec_type": "AUTO", "http_filters": filters,
           "stream_idle_timeout": _duration(max(300.0, s.timeout_s)), "request_timeout": "0s",
           "route_config": {"name": name, "validate_clusters": False, "virtual_hosts": [{
               "name": name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
                   "cluster": cluster, "timeout": _duration(s.timeout_s), "priority": priority}}]}]},
           "local_reply_config": {"mappers": [{
               "filter": {"response_flag_filter": {"flags": ["UF", "UH", "UR", "UC", "URX"]}},
               "headers_to_add": [{"header": {"key": RETRIABLE, "value": "1"}}]}]}}
    return {"name": name, "internal_listener": {}, "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def _stub_filter() -> Dict[str, Any]:
    """``STUB_FAILED_LUA`` behind a composite filter that instantiates it only for a response whose status is 500:
    every other response passes no Lua at all (a Lua filter on every response costs a coroutine per request)."""
    lua = {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": _LUA_T, "default_source_code": {"inline_string": STUB_FAILED_LUA}}}
    return {"name": "tritonmix.stub_failed", "typed_config": {
        "@type": _MATCHER_T,
        "extension_config": {"name": "envoy.filters.http.composite", "typed_config": {"@type": _COMPOSITE_T}},
        "xds_matcher": {"matcher_list": {"matchers": [{
            "predicate": {"single_predicate": {
                "input": {"name": "status", "typed_config": {"@type": _STATUS_INPUT_T}},
                "value_match": {"exact": "500"}}},
            "on_match": {"action": {"name": "stub-500", "typed_config": {
                "@type": _EXECUTE_T, "typed_config": lua}}}}]}}}}


def _address(host: str, port: int) -> Dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _listener(protocol: str, s: GatewaySettings, rds: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    hcm: Dict[str, Any] = {
        "@type": _HCM_T, "stat_prefix": protocol, "codec_type": "AUTO" if protocol == "http" else "HTTP2",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_T}}],
        "stream_idle_timeout": _duration(max(300.0, s.timeout_s)),
        "request_timeout": "0s",
    }
    if protocol == "http":
        hcm["rds"] = {"route_config_name": "http", "config_source": rds}
        # a body over the limit is refused by the proxy (413) before any endpoint sees it (0: no limit, no buffer
        # filter); KServe v2 errors are JSON objects {"error": "..."}, so every reply Envoy makes itself is one
        if s.max_request_bytes > 0:
            hcm["http_filters"].insert(0, {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": _BUFFER_T, "max_request_bytes": s.max_request_bytes}})
        hcm["local_reply_config"] = {"mappers": [
            {"filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                "default_value": 413, "runtime_key": "tritonmix.status413"}}}},
             "body": {"inline_string": f"request body is larger than the gateway's limit of "
                                       f"{s.max_request_bytes} bytes"}}],
            "body_format": {"json_format": {"error": "%LOCAL_REPLY_BODY%"}}}
    else:
        hcm["http2_protocol_options"] = {}
        hcm["route_config"] = {"name": "grpc", "validate_clusters": False, "virtual_hosts": [{
            "name": "grpc", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": _route_action(cluster_name("grpc", None), s, True)}]}]}
    if s.access_log:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": _FILE_LOG_T, "path": s.access_log,
            "log_format": {"text_format_source": {"inline_string":
                f"[%START_TIME%] {protocol} \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE% %RESPONSE_FLAGS% "
                "%GRPC_STATUS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms %UPSTREAM_HOST% "
                "attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}}}]
    chain: Dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                          "typed_config": hcm}]}
    if s.tls_cert:
        alpn = ["h2", "http/1.1"] if protocol == "http" else ["h2"]
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TLS_T, "common_tls_context": {"alpn_protocols": alpn, "tls_certificates": [{
                "certificate_chain": {"filename": s.tls_cert}, "private_key": {"filename": s.tls_key}}]}}}
    port = s.http_port if protocol == "http" else s.grpc_port
    return {"name": protocol, "address": _address(s.host, port), "filter_chains": [chain],
            "per_connection_buffer_limit_bytes": 1 << 20}


def _route_action(cluster: str, s: GatewaySettings, grpc: bool, capped: int = 0) -> Dict[str, Any]:
    """Retries only where the request never reached a server or the connection broke (the retry budget in the
    cluster's circuit breakers caps them at ``retry_budget_percent`` of the requests in flight), each on another
    host than the attempts before and in another priority (a cheap pool of one endpoint that died is priority 0
    alone: its retry must go to priority 1 before health checks have caught up). The budget allows at least
    ``retry_budget_min_concurrency`` retries at once: an endpoint that dies under load fails every request it holds
    and every connection to it at the same moment (with a floor of 3, one fault run at 8 in flight had 5 requests
    fail without a retry). The back-off (jittered, from ``retry_backoff_s``) is short, because a full endpoint's
    overflow is retried the same way and its request must not wait; what keeps a retry off the endpoint that
    failed is the previous_hosts predicate: with unequal weights Envoy's pick is a deadline schedule, and a retry's
    new pick may land on the heavy endpoint again (up to 100 picks per retry walk the schedule past a host of
    weight 1000 to one of weight 10). ``capped`` (a model cluster whose limits are enforced): the number of
    endpoints at its priority 0, each tried once before priority 1."""
    retry_on = "connect-failure,refused-stream,reset" + (",unavailable" if grpc else "")
    policy: Dict[str, Any] = {
        "retry_on": retry_on, "num_retries": s.retries,
        "retry_back_off": {"base_interval": _duration(s.retry_backoff_s),
                           "max_interval": _duration(10 * s.retry_backoff_s)},
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": _PREVIOUS_HOSTS_T}}],
        "retry_priority": {"name": "envoy.retry_priorities.previous_priorities",
                           "typed_config": {"@type": _PREVIOUS_PRIORITIES_T, "update_frequency": 1}},
        "host_selection_retry_max_attempts": 100}
    if capped:  # each planned endpoint once (priority 0), then priority 1; overflow and unreached are retried
        policy["retry_on"] += ",retriable-headers"
        policy["retriable_headers"] = [{"name": "x-envoy-overloaded", "present_match": True},
                                       {"name": RETRIABLE, "present_match": True}]
        policy["num_retries"] = s.retries + capped - 1
        policy["retry_priority"]["typed_config"]["update_frequency"] = capped
    return {"cluster": cluster, "timeout": _duration(s.timeout_s), "retry_policy": policy}


def route_config(models: Sequence[str], s: GatewaySettings,
                 planned: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """RDS for the HTTP listener: each model's paths to its cluster, the rest to the default cluster.
    ``planned``: per model, how many endpoints its priority 0 holds (1 when not given; only with limits)."""
    routes: List[Dict[str, Any]] = []
    for model in models:
        capped = max(1, (planned or {}).get(model, 1)) if s.enforce_limits else 0
        action = _route_action(cluster_name("http", model), s, False, capped)
        routes.append({"match": {"path": f"/v2/models/{model}"}, "route": action})
        routes.append({"match": {"prefix": f"/v2/models/{model}/"}, "route": action})
    routes.append({"match": {"prefix": "/"}, "route": _route_action(cluster_name("http", None), s, False)})
    return {"version_info": "0", "resources": [{"@type": _ROUTES_T, "name": "http", "virtual_hosts": [
        {"name": "kserve", "domains": ["*"], "routes": routes}]}]}


def clusters(models: Sequence[str], s: GatewaySettings, eds_path: Any, folder: str,
             upstreams: Sequence[Upstream] = ()) -> Dict[str, Any]:
    """CDS: per protocol a default cluster and (HTTP) one per model; ``eds_path(cluster)`` names its EDS file.
    With ``enforce_limits`` a model's cluster only picks (no health checks or outlier detection: its hosts are
    the inner hops, and a full endpoint's 503 must eject nothing) and each endpoint gets an inner cluster that
    holds them."""
    out = []
    for protocol in ("http", "grpc"):
        for model in ([None] + list(models) if protocol == "http" else [None]):
            name = cluster_name(protocol, model)
            ready = "/v2/health/ready" if model is None else f"/v2/models/{model}/ready"
            cluster = _cluster(name, protocol, s, _source(eds_path(name), folder), ready)
            if model is not None and s.enforce_limits:
                del cluster["health_checks"], cluster["outlier_detection"]
                for u in upstreams:
                    out.append(_inner_cluster(model, u, s, ready))
            out.append(cluster)
    return {"version_info": "0", "resources": out}


def _inner_cluster(model: str, u: Upstream, s: GatewaySettings, ready_path: str) -> Dict[str, Any]:
    """The endpoint alone (static address), with the model cluster's health checks and outlier detection; its
    DEFAULT requests capped by the runtime key ``limit_runtime`` (NO_LIMIT until a plan sets one), its HIGH ones
    not."""
    name = inner_name("in", model, u.name)
    cluster = _cluster(name, "http", s, {}, ready_path)
    del cluster["eds_cluster_config"], cluster["least_request_lb_config"]
    cluster.update({"type": "STATIC", "lb_policy": "ROUND_ROBIN", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": _address(u.host, u.http_port), "hostname": u.name}}]}]}})
    unbounded = {"max_connections": NO_LIMIT, "max_pending_requests": NO_LIMIT, "max_requests": NO_LIMIT,
                 "max_retries": 0}
    cluster["circuit_breakers"] = {"thresholds": [dict(unbounded, priority="DEFAULT"),
                                                  dict(unbounded, priority="HIGH")]}
    return cluster


def _cluster(name: str, protocol: str, s: GatewaySettings, eds: Dict[str, Any], ready_path: str) -> Dict[str, Any]:
    """Weighted least request (each pick: of two hosts drawn by weight, the one with fewer requests active; with
    unequal weights, weight / (active + 1)^bias), health checked over HTTP/1.1 on ``ready_path`` (a model's cluster
    on /v2/models/<m>/ready: a server can be ready while one of its models is not; the default clusters on
    /v2/health/ready), on the endpoint's HTTP port for the gRPC cluster too; hosts that fail locally (refused,
    reset, timed out) or answer 502/503/504 in a row ejected for a while; a plain 500 or any 4xx is a client's or
    a model's answer and ejects nothing."""
    cluster: Dict[str, Any] = {
        "@type": _CLUSTER_T, "name": name, "type": "EDS", "eds_cluster_config": {"eds_config": eds},
        "connect_timeout": _duration(s.connect_timeout_s), "lb_policy": "LEAST_REQUEST",
        "least_request_lb_config": {"choice_count": 2, "active_request_bias": {
            "default_value": s.active_request_bias, "runtime_key": "tritonmix.active_request_bias"}},
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        "ignore_health_on_host_removal": True,
        "health_checks": [{
            "timeout": _duration(s.health_timeout_s), "interval": _duration(s.health_interval_s),
            "no_traffic_interval": _duration(s.health_interval_s * 4),
            "unhealthy_threshold": s.unhealthy_threshold, "healthy_threshold": 1,
            "always_log_health_check_failures": False,
            "http_health_check": {"path": ready_path, "codec_client_type": "HTTP1"}}],
        "outlier_detection": {
            "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 2,
            "enforcing_consecutive_local_origin_failure": 100, "enforcing_local_origin_success_rate": 0,
            "consecutive_gateway_failure": 3, "enforcing_consecutive_gateway_failure": 100,
            "consecutive_5xx": 1000000, "enforcing_consecutive_5xx": 0, "enforcing_success_rate": 0,
            "interval": _duration(s.outlier_interval_s), "base_ejection_time": _duration(s.outlier_base_ejection_s),
            "max_ejection_percent": 100},
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": 100000, "max_pending_requests": 100000,
            "max_requests": 100000,
            "retry_budget": {"budget_percent": {"value": s.retry_budget_percent},
                             "min_retry_concurrency": s.retry_budget_min_concurrency}}]},
        "per_connection_buffer_limit_bytes": 1 << 20,
    }
    if protocol == "grpc":
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS_T, "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def envoy_weights(weights: Sequence[float]) -> Tuple[int, ...]:
    """Plan weights (>= 0) as Envoy's integer weights; 0 where the plan gives none."""
    return tuple(max(1, int(round(w * WEIGHT_SCALE))) if w > 0 else 0 for w in weights)


def load_assignment(name: str, protocol: str, upstreams: Sequence[Upstream], weights: Sequence[float],
                    available: Sequence[bool], version: str, model: Optional[str] = None) -> Dict[str, Any]:
    """EDS for one cluster (module docstring): priority 0 holds the planned endpoints with their weights, priority
    1 the available ones the plan sends nothing (Envoy spills there when priority 0 lacks healthy hosts) and the
    unavailable ones marked UNHEALTHY. When the plan weights no available endpoint, every available one is at
    priority 0 with weight 1. ``model`` (a capped model cluster): the hosts are the inner hops, priority 0 the
    capped ones of the planned endpoints, priority 1 the uncapped ones of every endpoint (weight at least 1), the
    unavailable ones UNHEALTHY."""
    if model is not None:
        return _capped_assignment(name, model, upstreams, weights, available, version)
    ints = envoy_weights(weights)
    if not any(w and ok for w, ok in zip(ints, available)):
        ints = tuple(1 if ok else 0 for ok in available)
    groups: Dict[int, List[Dict[str, Any]]] = {0: [], 1: []}
    for u, w, ok in zip(upstreams, ints, available):
        port = u.http_port if protocol == "http" else u.grpc_port
        if not port:
            continue
        lb: Dict[str, Any] = {"endpoint": {"address": _address(u.host, port), "hostname": u.name,
                                           "health_check_config": {"port_value": u.http_port}},
                              "load_balancing_weight": max(1, w),
                              "metadata": {"filter_metadata": {"tritonmix": {"generation": version}}}}
        if u.http_port == 0:
            del lb["endpoint"]["health_check_config"]
        if not ok:
            lb["health_status"] = "UNHEALTHY"
        groups[0 if ok and w > 0 else 1].append(lb)
    endpoints = [{"priority": p, "lb_endpoints": group} for p, group in groups.items() if group]
    if endpoints and endpoints[0]["priority"] != 0:  # Envoy wants priorities from 0 without gaps
        endpoints[0]["priority"] = 0
    return {"version_info": version, "resources": [{"@type": _CLA_T, "cluster_name": name, "endpoints": endpoints}]}


def _capped_assignment(name: str, model: str, upstreams: Sequence[Upstream], weights: Sequence[float],
                       available: Sequence[bool], version: str) -> Dict[str, Any]:
    ints = envoy_weights(weights)
    if not any(w and ok for w, ok in zip(ints, available)):
        ints = tuple(1 if ok else 0 for ok in available)
    meta = {"filter_metadata": {"tritonmix": {"generation": version}}}

    def host(kind: str, u: Upstream, w: int, ok: bool) -> Dict[str, Any]:
        lb: Dict[str, Any] = {"endpoint": {"address": {"envoy_internal_address": {
            "server_listener_name": inner_name(kind, model, u.name)}}, "hostname": u.name},
            "load_balancing_weight": max(1, w), "metadata": meta}
        if not ok:
            lb["health_status"] = "UNHEALTHY"
        return lb

    first = [host("cap", u, w, True) for u, w, ok in zip(upstreams, ints, available) if ok and w > 0]
    rest = [host("all", u, w, ok) for u, w, ok in zip(upstreams, ints, available)]
    return {"version_info": version, "resources": [{"@type": _CLA_T, "cluster_name": name, "endpoints": [
        {"priority": 0, "lb_endpoints": first}, {"priority": 1, "lb_endpoints": rest}]}]}


def planned_count(weights: Sequence[float], available: Sequence[bool]) -> int:
    """How many endpoints a capped model cluster holds at priority 0 (``_capped_assignment``)."""
    ints = envoy_weights(weights)
    n = sum(1 for w, ok in zip(ints, available) if w and ok)
    return n or sum(1 for ok in available if ok)
