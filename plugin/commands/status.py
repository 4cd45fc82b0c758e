"""``tritonmix status FLEET.yaml``: a live terminal table of the controller's view of a fleet.

It builds a Router over the fleet's URLs (for local endpoints: those of the fleet that ``tritonmix fleet up`` runs for
the file) and runs a Controller over it (no traffic of its own: it shows what the servers' metrics and readiness
say), refreshing every ``--interval`` seconds until Ctrl-C, or once with ``--once``.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Any, Dict, Optional

from ..cli import CLIError
from ..errors import ConfigError

__all__ = ["register", "render"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="live table of the controller's view of a fleet",
        description="Poll a fleet's Triton servers (readiness, metrics) through the tritonmix controller and show "
        "per endpoint: health, weight, capacity estimate mu, cost per inference, and the mode.")
    parser.add_argument("fleet", nargs="?", help="fleet file (YAML)")
    parser.add_argument("--control-plane", default=None, metavar="HOST:PORT",
                        help="show a control plane's view instead (its clients, per-endpoint load, plan, mode)")
    parser.add_argument("--token-file", default=None, help="the control plane's bearer token (default: the "
                        "TRITONMIX_CONTROL_PLANE_TOKEN environment variable)")
    parser.add_argument("--interval", type=float, default=None, help="seconds between refreshes (default: the "
                        "fleet's controller.interval_s)")
    parser.add_argument("--once", action="store_true", help="print one table after a few ticks and exit")
    parser.add_argument("--metrics-url", action="append", default=[], metavar="NAME=URL",
                        help="Triton metrics URL of an endpoint (e.g. inf2-a=http://10.0.0.5:8002/metrics)")
    parser.set_defaults(func=run)


def _metrics_urls(items: Any) -> Dict[str, str]:
    urls = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise CLIError(f"--metrics-url {item!r}: expected NAME=URL")
        urls[name] = url
    return urls


def run(args: argparse.Namespace) -> int:
    if args.control_plane:
        return _plane(args)
    if not args.fleet:
        raise CLIError("give a fleet file, or --control-plane HOST:PORT")
    from ..controller import Controller
    from ..fleet import Fleet
    from ..request import Router

    from ..local.supervisor import attach

    try:
        fleet = attach(Fleet.from_file(args.fleet))  # local endpoints: the URLs of the fleet `fleet up` runs
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc
    interval_s = args.interval or fleet.controller.interval_s
    controller = Controller(fleet, Router(fleet), metrics_urls=_metrics_urls(args.metrics_url))
    try:
        return _loop(controller, interval_s, args.once)
    finally:
        controller.stop()


def _loop(controller: Any, interval_s: float, once: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if once:
        for _ in range(4):  # a few ticks so the scrapes land and the deltas mean something
            controller.tick()
            time.sleep(interval_s)
        console.print(render(controller))
        return 0
    with Live(render(controller), console=console, refresh_per_second=4) as live:
        while True:
            controller.tick()
            live.update(render(controller))
            time.sleep(interval_s)


def render(controller: Any) -> Any:
    """A rich Table of ``controller.snapshot()`` (a placeholder line before the first tick)."""
    from rich.table import Table

    snap = controller.snapshot()
    if snap is None:
        return "waiting for the first tick..."
    title = f"tritonmix: mode {snap.mode.upper()} (configured {snap.configured_mode})" + (" PANIC" if snap.panic else "")
    table = Table(title=title, caption=_caption(snap, controller))
    for column in ("endpoint", "pool", "health", "weight i/b", "mu req/s", "latency ms", "$/1k inf", "in flight",
                   "assigned req/s", "sample age s"):
        table.add_column(column, justify="left" if column in ("endpoint", "pool", "health") else "right")
    for r in snap.endpoints:
        health = "DOWN" if not r.ready else ("ejected" if r.ejected else "ready")  # down says more than ejected
        table.add_row(r.name, r.pool, health, f"{r.interactive_weight:.2f}/{r.batch_weight:.2f}", _mu(snap, r),
                      _num(r.latency_s * 1e3, ".0f"), _num(r.cost_per_inference * 1e3, ".4f"), str(r.in_flight),
                      f"{r.assigned_rps:.2f}", _num(r.stale_s, ".1f"))
    return table


def _mu(snap: Any, row: Any) -> str:
    """mu of the row; per model ("sd 29.10 / tiny 410.00") when the endpoint serves several."""
    per_model = sorted((m, mu) for (name, m), mu in getattr(snap, "capacity_rps", {}).items() if name == row.name)
    if len(per_model) > 1:
        return " / ".join(f"{m} {mu:.2f}" for m, mu in per_model)
    return f"{row.mu_rps:.2f}"


def _caption(snap: Any, controller: Any) -> str:
    replicas = ", ".join(f"{pool}: {n}" for pool, n in sorted(snap.desired_replicas.items()))
    last: Optional[Any] = (controller.decisions() or [None])[-1]
    text = f"desired replicas {replicas or '-'}"
    return text + (f" | last decision: {last.summary}" if last is not None else "")


def _num(value: float, fmt: str) -> str:
    return "-" if not math.isfinite(value) else format(value, fmt)


def read_token(path: Optional[str]) -> Optional[str]:
    """The control plane's bearer token from ``path``, else from TRITONMIX_CONTROL_PLANE_TOKEN (``settings``)."""
    from ..settings import read_token as settings_read_token

    try:
        return settings_read_token(path)
    except ConfigError as exc:
        raise CLIError(f"--token-file: {exc}") from None


def _plane(args: argparse.Namespace) -> int:
    """``--control-plane``: poll the plane's /v1/status every ``--interval`` (1 s by default)."""
    from rich.console import Console
    from rich.live import Live

    token = read_token(args.token_file)
    base = args.control_plane if args.control_plane.startswith(("http://", "https://")) else \
        "http://" + args.control_plane
    interval_s = args.interval or 1.0

    def fetch() -> Dict[str, Any]:
        import json

        from ..control_plane.report import http_call

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            status, body = http_call(base.rstrip("/") + "/v1/status", headers=headers, timeout_s=5.0)
        except OSError as exc:
            raise CLIError(f"control plane {args.control_plane}: {exc}") from None
        if status != 200:
            raise CLIError(f"control plane {args.control_plane}: HTTP {status}: {body[:200].decode(errors='replace')}")
        return json.loads(body)

    console = Console()
    if args.once:
        console.print(render_plane(fetch()))
        return 0
    with Live(render_plane(fetch()), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(interval_s)
            live.update(render_plane(fetch()))


def render_plane(st: Dict[str, Any]) -> Any:
    """A rich Group: the plane's endpoints table and its clients table."""
    from rich.console import Group
    from rich.table import Table

    mode = (st.get("mode") or "-").upper()
    title = (f"tritonmix control plane {st['address']} ({st['role']}): mode {mode} (configured "
             f"{st['configured_mode']}), plan {st['generation']}, {st['ticks']} ticks")
    replicas = ", ".join(f"{pool}: {n}" for pool, n in sorted(st.get("desired_replicas", {}).items()))
    endpoints = Table(title=title, caption=f"desired replicas {replicas or '-'} | reports {st['reports']} | "
                      f"refused {st['refused'] or 0}")
    for column in ("endpoint", "pool", "health", "weight", "mu req/s", "in flight", "assigned req/s", "scrapes"):
        endpoints.add_column(column, justify="left" if column in ("endpoint", "pool", "health") else "right")
    for r in st["endpoints"]:
        health = "DOWN" if not r.get("ready") else ("ejected" if r.get("ejected") else "ready")
        endpoints.add_row(r["name"], str(r.get("pool", "-")), health, _fmt(r.get("interactive_weight"), ".2f"),
                          _fmt(r.get("mu_rps"), ".2f"), str(r["in_flight"]), _fmt(r.get("assigned_rps"), ".2f"),
                          str(r["scrapes"]) if r.get("scrapes") is not None else "-")
    clients = Table(title=f"{len(st['clients'])} clients")
    for column in ("client", "seen s ago", "reports", "req/s", "plan age s", "in flight", "ejected"):
        clients.add_column(column, justify="left" if column in ("client", "ejected") else "right")
    for c in st["clients"]:
        clients.add_row(c["client"], f"{c['seen_s_ago']:.2f}", str(c["reports"]), f"{c['interactive_rps']:.1f}",
                        _fmt(c["plan_age_s"], ".2f"), str(c["in_flight"]), ", ".join(c["ejected"]) or "-")
    return Group(endpoints, clients)


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)
