"""How ``tritonmix fleet up`` in one process and ``fleet down|status|kill|...`` in another find the running fleet.

The process that runs ``fleet up`` (the *supervisor*) owns the ``LocalFleet``: its servers die with it (parent-death
signal), so it stays in the foreground, or in the background with ``--detach``. It writes a state file::

    $TRITONMIX_RUN_DIR (default: <tmp>/tritonmix-run-<uid>) / fleet-<sha1 of the fleet file's absolute path>[:12].json

    {"fleet_file": ..., "supervisor_pid": ..., "control_url": "127.0.0.1:PORT", "ready": true,
     "endpoints": {"inf2-a": {"http_url", "grpc_url", "metrics_url", "pid", "model", "emulated", ...}}, ...}

(``--state PATH`` picks another file). ``fleet status`` reads the URLs from it and asks the servers themselves;
faults go to the supervisor's control port (HTTP on 127.0.0.1, ``POST /fault {"action", "name", "value"}``), so the
fleet that started a server is the one that reaps it and removes its /dev/shm regions; ``fleet down`` sends the
supervisor SIGTERM, waits for it, and then makes sure no recorded server pid is left.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import ConfigError, FaultError, TritonMixError
from ..fleet import Fleet
from .fleet import LocalFleet

__all__ = ["RUN_DIR_ENV", "run_dir", "state_path", "read_state", "write_state", "ControlServer", "send_fault",
           "FaultError", "alive", "running_state", "attach"]

logger = logging.getLogger(__name__)

RUN_DIR_ENV = "TRITONMIX_RUN_DIR"
ACTIONS = ("kill", "stop", "restart", "set-capacity", "slow-down", "freeze", "thaw")



def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or Path(tempfile.gettempdir()) / f"tritonmix-run-{os.getuid()}")


def state_path(fleet_file: Union[str, Path]) -> Path:
    key = hashlib.sha1(str(Path(fleet_file).resolve()).encode()).hexdigest()[:12]
    return run_dir() / f"fleet-{key}.json"


def read_state(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_state(path: Path, state: Dict[str, Any]) -> None:
    """Atomically (write a temporary file, then rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2))  # endpoints stay in file order
    tmp.replace(path)


def alive(pid: Any) -> bool:
    """Running and not a zombie (a supervisor we spawned ourselves stays a zombie until reaped)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def running_state(fleet_file: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The state of the fleet that ``tritonmix fleet up`` runs for ``fleet_file``; None when none runs."""
    state = read_state(state_path(fleet_file))
    return state if state is not None and alive(state.get("supervisor_pid")) else None


def attach(fleet: Fleet, protocol: str = "http") -> Fleet:
    """``fleet`` with its local endpoints' URLs (``protocol``'s, and the metrics port) taken from the running fleet of
    its file, so that a client or ``tritonmix status`` given the fleet file reaches the servers that ``tritonmix
    fleet up`` started. A fleet without local endpoints is returned as it is; ConfigError when it has some and no
    fleet of its file is up."""
    local = [e.name for e in fleet.endpoints if e.url is None]
    if not local:
        return fleet
    state = running_state(fleet.source) if fleet.source else None
    if state is None:
        raise ConfigError(f"endpoint(s) {', '.join(local)} are local (no url) and no fleet is up for "
                          f"{fleet.source or 'this fleet'}: start it with "
                          f"`tritonmix fleet up {fleet.source or 'FLEET'} "
                          "--detach`, or use tritonmix.local.LocalFleet")
    eps = state.get("endpoints", {})
    missing = [name for name in local if name not in eps]
    if missing:
        raise ConfigError(f"the running fleet of {fleet.source} has no endpoint(s) {', '.join(missing)}: "
                          "its file changed since `tritonmix fleet up`; restart the fleet")
    key = "grpc_url" if protocol == "grpc" else "http_url"
    return dataclasses.replace(fleet, endpoints=tuple(
        dataclasses.replace(e.with_url(eps[e.name][key], eps[e.name].get("metrics_url")), protocol=protocol)
        if e.url is None else e for e in fleet.endpoints))


def fleet_state(local: LocalFleet, fleet_file: str, control_url: str) -> Dict[str, Any]:
    endpoints = {
        name: {
            "http_url": ep.http_url, "grpc_url": ep.grpc_url, "metrics_url": ep.metrics_url, "pid": ep.pid,
            "model": ep.model_name, "emulated": ep.emulated, "accelerator": ep.spec.accelerator,
            "price_per_hour": ep.spec.price_per_hour, "profile": ep.profile.name if ep.profile else None,
        }
        for name, ep in local.endpoints.items()
    }
    return {"fleet_file": str(Path(fleet_file).resolve()), "supervisor_pid": os.getpid(), "ready": True,
            "control_url": control_url, "work_dir": str(local.work_dir), "endpoints": endpoints}


def apply_fault(local: LocalFleet, action: str, name: str, value: Any) -> None:
    if name not in local.endpoints:
        raise FaultError(f"no local endpoint named {name!r} (have: {', '.join(local.endpoints)})")
    if action == "kill":
        local.kill(name)
    elif action == "stop":
        local.stop(name)
    elif action == "restart":
        local.restart(name)
    elif action == "set-capacity":
        local.set_capacity(name, value)
    elif action == "slow-down":
        local.slow_down(name, value)
    elif action == "freeze":
        local.freeze(name)
    elif action == "thaw":
        local.thaw(name)
    else:
        raise FaultError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")


class ControlServer:
    """The supervisor's control port: applies faults to its LocalFleet and rewrites the state file after each."""

    def __init__(self, local: LocalFleet, fleet_file: str, path: Path) -> None:
        self.local, self.fleet_file, self.path = local, fleet_file, path
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                code, reply = owner.handle(self.path, self.rfile.read(length))
                body = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("control: " + fmt, *args)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tritonmix-control", daemon=True)

    def start(self) -> "ControlServer":
        self._thread.start()
        self.write_state()
        return self

    def write_state(self) -> None:
        write_state(self.path, fleet_state(self.local, self.fleet_file, self.url))

    def handle(self, route: str, body: bytes) -> tuple:
        if route != "/fault":
            return 404, {"error": f"no route {route}"}
        try:
            request = json.loads(body or b"{}")
            with self._lock:
                apply_fault(self.local, str(request.get("action")), str(request.get("name")), request.get("value"))
                self.write_state()
        except (TritonMixError, KeyError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 200, {"ok": True}

    def close(self) -> None:
        """Stop serving and release the port; safe before ``start()`` (socketserver's shutdown() would wait forever
        for a serve loop that never ran)."""
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(timeout=5.0)
        self.httpd.server_close()


def send_fault(state: Dict[str, Any], action: str, name: str, value: Any = None, timeout_s: float = 180.0) -> None:
    """Ask the supervisor named in ``state`` to apply a fault; FaultError with its reason when it cannot."""
    request = urllib.request.Request(
        f"http://{state['control_url']}/fault", method="POST",
        data=json.dumps({"action": action, "name": name, "value": value}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            reason = str(exc)
        raise FaultError(reason) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FaultError(f"the fleet's supervisor at {state['control_url']} does not answer: {exc}") from exc
