"""``tritonmix control-plane --fleet FLEET [--listen HOST:PORT]``: one control plane for every client of a fleet,
in the foreground (``tritonmix.control_plane.ControlPlane``); Ctrl-C or SIGTERM stops it."""
from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from ..cli import CLIError
from ..errors import ConfigError, LaunchError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "control-plane", help="serve one controller's plans to every client of a fleet",
        description="Run one controller for a fleet: it scrapes each Triton endpoint once per tick, merges the "
        "reports of every client that follows it (control_plane= on the clients, or control_plane: in the fleet "
        "file) and publishes each plan to them. Ctrl-C or SIGTERM stops it; its clients fall back to their own "
        "controllers within two intervals.")
    parser.add_argument("--fleet", required=True, help="fleet file (YAML)")
    parser.add_argument("--listen", default="127.0.0.1:8470",
                        help="HOST:PORT to listen on (default 127.0.0.1:8470; port 0 picks a free one). An address "
                        "beyond loopback needs a token")
    parser.add_argument("--advertise", default=None, metavar="HOST:PORT",
                        help="the address this replica is listed under in --replica when it is not --listen (e.g. "
                        "--listen 0.0.0.0:8470 --advertise plane-0.plane.ns.svc:8470)")
    parser.add_argument("--token-file", default=None, help="file holding the bearer token clients must send "
                        "(default: the TRITONMIX_CONTROL_PLANE_TOKEN environment variable, if set)")
    parser.add_argument("--tls-cert", default=None, help="serve over TLS with this certificate (PEM) ...")
    parser.add_argument("--tls-key", default=None, help="... and this private key (PEM)")
    parser.add_argument("--replica", action="append", default=[], metavar="HOST:PORT",
                        help="every replica of this plane in preference order, this one included (default: the "
                        "fleet file's control_plane list); a replica leads while none listed before it answers")
    parser.add_argument("--metrics-url", action="append", default=[], metavar="NAME=URL",
                        help="Triton metrics URL of an endpoint (e.g. inf2-a=http://10.0.0.5:8002/metrics)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..control_plane import ControlPlane
    from ..fleet import Fleet
    from ..heap import configure_collector
    from ..local.supervisor import attach
    from .status import _metrics_urls, read_token

    try:
        fleet = attach(Fleet.from_file(args.fleet))
        replicas = args.replica or (list(fleet.control_plane.replicas) if fleet.control_plane else [])
        plane = ControlPlane(fleet, listen=args.listen, token=read_token(args.token_file), tls_cert=args.tls_cert,
                             tls_key=args.tls_key, replicas=replicas, metrics_urls=_metrics_urls(args.metrics_url),
                             advertise=args.advertise)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        plane.start()
    except (ConfigError, LaunchError) as exc:
        raise CLIError(str(exc)) from exc
    configure_collector()  # a process of ours: start-up frozen, young threshold raised (tritonmix.heap)
    found = fleet.discovery
    what = (f"endpoints of Kubernetes fleet {found.fleet!r} in namespace {found.namespace!r}, followed live"
            if found is not None else f"{len(fleet.endpoints)} endpoints")
    print(f"tritonmix control plane ready: {plane.url} ({what}, {plane.role}); Ctrl-C stops it", flush=True)
    print(f"  clients: control_plane=\"{plane.address}\"   metrics: {plane.url}/metrics   "
          f"status: tritonmix status --control-plane {plane.address}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping the control plane ...", flush=True)
        plane.stop()
    print("control plane stopped", flush=True)
    return 0
