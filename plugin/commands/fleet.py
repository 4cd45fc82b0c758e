"""``tritonmix fleet up|down|status|kill|stop|restart|set-capacity|slow-down|freeze|thaw FLEET.yaml ...``

``fleet up`` starts one real Triton server per local endpoint and stays in the foreground (Ctrl-C or SIGTERM stops
the fleet); ``--detach`` runs the same supervisor in the background and returns once the fleet is ready. The other
subcommands find the running fleet through its state file (``tritonmix.local.supervisor``: one per fleet file under
``$TRITONMIX_RUN_DIR``, or ``--state PATH``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from ..cli import CLIError
from ..errors import TritonMixError

__all__ = ["register"]

_FAULTS = {"kill": "SIGKILL the endpoint's server", "stop": "stop the endpoint's server gracefully",
           "restart": "start the endpoint's server again on the same ports",
           "freeze": "SIGSTOP the endpoint's server: it accepts connections and answers nothing",
           "thaw": "SIGCONT a frozen server"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fleet", help="a local fleet of real Triton servers (emulated accelerators), with faults on demand",
        description="Start, inspect, break and stop a local fleet described by a fleet file.")
    actions = parser.add_subparsers(dest="fleet_command", metavar="ACTION")
    actions.required = True
    up = _add(actions, "up", "start the fleet's local servers (foreground; --detach for background)")
    up.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    up.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    _add(actions, "down", "stop a fleet started with 'fleet up'")
    status = _add(actions, "status", "a table per endpoint from Triton's own metrics")
    status.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    for name, text in _FAULTS.items():
        _add(actions, name, text).add_argument("endpoint")
    capacity = _add(actions, "set-capacity", "serve at most N requests in parallel (server stays up)")
    capacity.add_argument("endpoint")
    capacity.add_argument("concurrency", type=int)
    slow = _add(actions, "slow-down", "multiply an emulated endpoint's latency by FACTOR (1 restores it)")
    slow.add_argument("endpoint")
    slow.add_argument("factor", type=float)


def _add(actions: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    parser.add_argument("fleet_file", metavar="FLEET.yaml")
    parser.add_argument("--state", help="state file (default: one per fleet file under $TRITONMIX_RUN_DIR)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..local import supervisor

    path = Path(args.state) if args.state else supervisor.state_path(args.fleet_file)
    command = args.fleet_command
    if command == "up":
        return _up_detached(args, path) if args.detach else _up(args, path)
    state = _running_state(path, args.fleet_file)
    if command == "down":
        return _down(state, path)
    if command == "status":
        return _status(state, args.json)
    value = args.concurrency if command == "set-capacity" else getattr(args, "factor", None)
    try:
        supervisor.send_fault(state, command, args.endpoint, value)
    except TritonMixError as exc:
        raise CLIError(str(exc)) from exc
    print(f"fleet {command} {args.endpoint}: done" + ("" if value is None else f" ({value})"), flush=True)
    return 0


def _running_state(path: Path, fleet_file: str) -> Dict[str, Any]:
    from ..local.supervisor import alive, read_state

    state = read_state(path)
    if state is None:
        raise CLIError(f"no fleet is up for {fleet_file} (no state file {path}); start one with 'tritonmix fleet up'")
    if not alive(state.get("supervisor_pid")):
        path.unlink(missing_ok=True)
        raise CLIError(f"the fleet for {fleet_file} is not running (its supervisor pid {state.get('supervisor_pid')} "
                       "is gone; removed the stale state file)")
    return state


def _load(fleet_file: str) -> Any:
    from ..fleet import Fleet

    try:
        return Fleet.from_file(fleet_file)
    except TritonMixError as exc:
        raise CLIError(str(exc)) from exc


def _up(args: argparse.Namespace, path: Path) -> int:
    from ..local import LocalFleet, format_table
    from ..local.supervisor import ControlServer, alive, read_state

    fleet = _load(args.fleet_file)
    previous = read_state(path)
    if previous and alive(previous.get("supervisor_pid")) and previous.get("supervisor_pid") != os.getpid():
        raise CLIError(f"a fleet is already up for {args.fleet_file} (pid {previous['supervisor_pid']}); "
                       "run 'tritonmix fleet down' first")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    local = LocalFleet(fleet, ready_timeout_s=args.ready_timeout)
    try:
        local.start()
    except TritonMixError as exc:
        raise CLIError(str(exc)) from exc
    control = None
    try:
        control = ControlServer(local, args.fleet_file, path).start()
        print(format_table(local.status()), flush=True)
        print(f"fleet up (supervisor pid {os.getpid()}, state {path}); Ctrl-C or 'tritonmix fleet down' stops it",
              flush=True)
        stop.wait()
        print("stopping the fleet ...", flush=True)
    finally:
        if control is not None:
            control.close()
        local.close()
        state = read_state(path)
        if state and state.get("supervisor_pid") == os.getpid():
            path.unlink(missing_ok=True)
    print("fleet down", flush=True)
    return 0


def _up_detached(args: argparse.Namespace, path: Path) -> int:
    from ..local.supervisor import read_state

    _load(args.fleet_file)  # a bad file fails here, with its one-line error
    path.parent.mkdir(parents=True, exist_ok=True)
    log_path = path.with_suffix(".log")
    command = [sys.executable, "-m", "tritonmix", "fleet", "up", args.fleet_file, "--state", str(path),
               "--ready-timeout", str(args.ready_timeout)]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + args.ready_timeout + 30
    while time.monotonic() < deadline:
        state = read_state(path)
        if state and state.get("supervisor_pid") == child.pid and state.get("ready"):
            return _status(state, as_json=False, extra=f"fleet up in the background (supervisor pid {child.pid}, "
                                                       f"log {log_path}); 'tritonmix fleet down' stops it")
        if child.poll() is not None:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            raise CLIError(lines[-1] if lines else f"the fleet supervisor exited with status {child.returncode}")
        time.sleep(0.2)
    child.terminate()
    raise CLIError(f"the fleet was not ready within {args.ready_timeout:.0f} s (log {log_path})")


def _status(state: Dict[str, Any], as_json: bool, extra: str = "") -> int:
    from ..local.status import format_table, probe

    rows = [probe(name, ep["accelerator"], ep["price_per_hour"], ep["http_url"], ep["metrics_url"], ep["model"],
                  ep["pid"], emulated=bool(ep.get("emulated")), profile=ep.get("profile") or "")
            for name, ep in state["endpoints"].items()]
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2), flush=True)
    else:
        print(format_table(rows), flush=True)
    if extra:
        print(extra, flush=True)
    return 0


def _down(state: Dict[str, Any], path: Path) -> int:
    from ..local.server import _kill_group, _shared_memory_of, _unlink_all
    from ..local.supervisor import alive

    pid = state["supervisor_pid"]
    servers: List[int] = [ep["pid"] for ep in state["endpoints"].values() if alive(ep.get("pid"))]
    regions = [region for server in servers for region in _shared_memory_of(server)]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)  # its servers follow it (parent-death signal)
    for server in servers:
        if alive(server) and _is_tritonserver(server):
            _kill_group(server)
    _unlink_all([region for region in regions if os.path.exists(region)])
    path.unlink(missing_ok=True)
    path.with_suffix(".log").unlink(missing_ok=True)
    print(f"fleet down: {len(state['endpoints'])} endpoint(s) stopped", flush=True)
    return 0


def _is_tritonserver(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("/tritonserver")
    except OSError:
        return False
