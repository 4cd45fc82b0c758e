"""tritonmix.gateway: a real Envoy in front of a fleet, for any client, driven by the control plane's plans.

    Gateway(fleet, http_port=8000, grpc_port=8001).start()   # or `tritonmix gateway --fleet FLEET`
    .http_url / .grpc_url (KServe v2 HTTP/REST and gRPC), .admin_url (Envoy's admin, 127.0.0.1), .stop()

Modules: ``gateway`` (the life cycle and the follow loop), ``config`` (Envoy's configuration as JSON values),
``xds`` (plans -> xDS files Envoy watches), ``stats`` (Envoy's per-host counters -> a control-plane report),
``envoy`` (the Envoy process). docs/gateway.md has the design and the figures.
"""
from .config import GatewaySettings, Upstream
from .envoy import EnvoyProcess, find_envoy
from .gateway import Gateway, fleet_models, upstreams_of

__all__ = ["Gateway", "GatewaySettings", "Upstream", "EnvoyProcess", "find_envoy", "fleet_models", "upstreams_of"]
