"""Figures of "hangs are failures too" (``tritonmix.request.rescue``): 16 callers on one client with default settings
(SLO 1 s), sync and aio, HTTP and gRPC, three local Triton servers of an EMULATED 20 ms model (4 in parallel each);
the first endpoint frozen (SIGSTOP), black-holed or half-open (a FaultProxy in front of its HTTP and gRPC ports) for
FAULT_S, or slowed 2x / 3x (still answering); then every endpoint frozen.

    flock /tmp/tritonmix-bench.lock .venv/bin/python benches/hangs.py [--fault-s 6] [--modes sync-http,...]

Per run: requests, failed, the slowest request (started from 1 s before the fault on, and over the whole run,
whose first seconds include the client's start), copies sent (read from the client: ``EndpointReport.rescued``);
for the all-frozen run, how long each call took to end and one of the errors. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "reliability"), str(HERE.parent / "tests")]

from reliability_support import Load  # noqa: E402
from tritonmix import Fleet  # noqa: E402
from tritonmix.errors import ServerExited  # noqa: E402
from tritonmix.local import FaultProxy, LocalFleet  # noqa: E402

MODES = ("sync-http", "sync-grpc", "aio-http", "aio-grpc")
FAULTS = ("freeze", "blackhole", "half_open", "slow2x", "slow3x")
CALLERS = 16
WARM_S = 2.0
AFTER_S = 1.0
LOCAL = {
    "time_scale": 1.0,
    "endpoints": [{"name": f"e{k}", "accelerator": "cpu", "price_per_hour": 1.0,
                   "profile": {"latency_s": 0.02, "concurrency": 4}} for k in range(3)],
}


#: the client's controller settings (``--rescue off``: the rescue turned off, for the figures without it)
CONTROLLER: Dict[str, Any] = {}


def client_fleet(local: LocalFleet, protocol: str, proxies: Dict[str, FaultProxy]) -> Fleet:
    """The local fleet as a new user's client sees it (default SLO and controller), e0 through its proxy."""
    endpoints = []
    for name, ep in local.endpoints.items():
        url = ep.grpc_url if protocol == "grpc" else ep.http_url
        if name == "e0":
            url = proxies[protocol].address
        endpoints.append({"name": name, "url": url, "metrics_url": ep.metrics_url, "protocol": protocol,
                          "accelerator": "cpu", "price_per_hour": 1.0})
    return Fleet.from_dict({"endpoints": endpoints, "controller": dict(CONTROLLER)})


def fault_actions(local: LocalFleet, proxies: Dict[str, FaultProxy], fault: str) -> Tuple[Callable, Callable]:
    if fault == "freeze":
        return lambda: local.freeze("e0"), lambda: local.thaw("e0")
    if fault.startswith("slow"):
        factor = float(fault[4:-1])
        return lambda: local.slow_down("e0", factor), lambda: local.slow_down("e0", 1.0)

    def begin() -> None:
        for proxy in proxies.values():
            proxy.set_mode(fault)

    def end() -> None:
        for proxy in proxies.values():
            proxy.set_mode("pass")
            proxy.reset_connections()  # the path is back; what was lost on it is reset, as a rebooted peer would

    return begin, end


def copies(client: Any) -> int:
    return sum(r.rescued for r in client.endpoint_reports())


def heal(local: LocalFleet) -> None:
    """Restart any server that is not running (said on stderr: a run must not start on a smaller fleet)."""
    for name, ep in local.endpoints.items():
        if not ep.running:
            print(f"note: {name} was not running; restarted (log: {ep.server.log_path})", file=sys.stderr)
            local.restart(name)


def retried(run: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``run()``, again (twice at most) when a server died under it: the python backend of Triton 2.51 here
    sometimes segfaults under load (its log says "Signal (11) received"), which is no figure of ours."""
    for attempt in range(3):
        try:
            return run()
        except ServerExited as exc:
            print(f"note: a server died during the run ({exc}); run again", file=sys.stderr)
    return run()


def one_run(local: LocalFleet, proxies: Dict[str, FaultProxy], mode: str, fault: str, fault_s: float) -> Dict[str, Any]:
    heal(local)
    begin, end = fault_actions(local, proxies, fault)
    load = Load(mode, client_fleet(local, mode.split("-")[1], proxies), callers=CALLERS, rate_per_caller=0.0)
    with load:
        time.sleep(WARM_S)
        before = copies(load.client)
        t0 = time.monotonic()
        begin()
        try:
            time.sleep(fault_s)
        finally:
            end()
        time.sleep(AFTER_S)
        load.stop()
        sent = copies(load.client) - before
    entries = load.ledger.all()
    during = [e for e in entries if e.started_s >= t0 - 1.0]
    return {"mode": mode, "fault": fault, "requests": len(entries), "failed": len(load.ledger.failures()),
            "max_latency_s": max(e.latency_s for e in entries), "max_latency_fault_s": max(e.latency_s for e in during),
            "copies": sent}


def all_frozen(local: LocalFleet, proxies: Dict[str, FaultProxy], mode: str, frozen_s: float) -> Dict[str, Any]:
    heal(local)
    load = Load(mode, client_fleet(local, mode.split("-")[1], proxies), callers=CALLERS, rate_per_caller=0.0)
    with load:
        time.sleep(WARM_S)
        t0 = time.monotonic()
        for name in local.endpoints:
            local.freeze(name)
        try:
            time.sleep(frozen_s)
        finally:
            for name in local.endpoints:
                local.thaw(name)
        time.sleep(AFTER_S)
        load.stop()
    ended = [e for e in load.ledger.all() if t0 <= e.started_s < t0 + frozen_s - 2.5 and not e.ok]
    times = sorted(e.latency_s for e in ended)
    return {"mode": mode, "errors": len(ended), "min_s": times[0] if times else float("nan"),
            "max_s": times[-1] if times else float("nan"), "example": str(ended[0].error) if ended else ""}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault-s", type=float, default=6.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--rescue", choices=("on", "off"), default="on")
    parser.add_argument("--all-frozen-s", type=float, default=5.0, help="0: no all-frozen runs")
    args = parser.parse_args(argv)
    CONTROLLER["rescue"] = args.rescue == "on"
    modes, faults = args.modes.split(","), [f for f in args.faults.split(",") if f]
    with LocalFleet(Fleet.from_dict(LOCAL), ready_timeout_s=120.0) as local:
        e0 = local.endpoints["e0"]
        proxies = {"http": FaultProxy(e0.http_url).start(), "grpc": FaultProxy(e0.grpc_url).start()}
        try:
            rows = [retried(lambda: one_run(local, proxies, mode, fault, args.fault_s))
                    for fault in faults for mode in modes]
            frozen = [retried(lambda: all_frozen(local, proxies, mode, args.all_frozen_s))
                      for mode in modes] if args.all_frozen_s > 0 else []
        finally:
            for proxy in proxies.values():
                proxy.stop()
    print(f"\n| fault on e0 ({args.fault_s:.0f} s) | client | requests | failed | slowest, started in the fault "
          "window (s) | slowest, whole run (s) | copies sent |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {r['mode']} | {r['requests']} | {r['failed']} | {r['max_latency_fault_s']:.3f} | "
              f"{r['max_latency_s']:.3f} | {r['copies']} |")
    print(f"\n| every endpoint frozen ({args.all_frozen_s:.0f} s) | calls that ended | each ended after (s), "
          "min - max |")
    print("|---|---|---|")
    for r in frozen:
        print(f"| {r['mode']} | {r['errors']} errors | {r['min_s']:.3f} - {r['max_s']:.3f} |")
    for r in frozen[:1]:
        print(f"\nexample error ({r['mode']}): {r['example']}")


if __name__ == "__main__":
    main(sys.argv[1:])
