"""``tritonmix serve``: one real Triton server from the nvidia-pytriton wheel, in the foreground."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..cli import CLIError
from ..errors import LaunchError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start a real Triton Inference Server on a model repository",
        description="Start a real Triton Inference Server (the binary of the nvidia-pytriton wheel) with the python "
        "backend set up for this interpreter; Ctrl-C or SIGTERM stops it cleanly.",
    )
    parser.add_argument("--model-repository", required=True, help="folder of Triton models")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 picks a free one)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="metrics port (default 8002; 0 picks one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--model-control-mode", default="none", choices=["none", "poll", "explicit"], help="Triton's model control"
    )
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..local import LocalTritonServer

    def port(value: int) -> Any:
        return None if value == 0 else value

    try:
        server = LocalTritonServer(
            args.model_repository,
            http_port=port(args.http_port),
            grpc_port=port(args.grpc_port),
            metrics_port=port(args.metrics_port),
            host=args.host,
            model_control_mode=args.model_control_mode,
            ready_timeout_s=args.ready_timeout,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
    except LaunchError as exc:
        raise CLIError(str(exc)) from exc
    print(f"tritonserver ready (pid {server.pid}); Ctrl-C stops it", flush=True)
    print(f"  HTTP    {server.http_url}", flush=True)
    print(f"  gRPC    {server.grpc_url}", flush=True)
    print(f"  metrics {server.metrics_url}", flush=True)
    while not stop.wait(0.5):
        if not server.running:
            server.stop()
            print(f"tritonmix serve: error: tritonserver exited unexpectedly (log: {server.log_path})", file=sys.stderr)
            return 1
    print("stopping tritonserver ...", flush=True)
    code = server.stop()
    print(f"tritonserver stopped (exit status {code})", flush=True)
    return 0
