"""``ControlPlane``: one Controller for every client of a fleet, served over HTTP.

    clients --(report, every tick)--> Board (merged view) --> Controller (Observer -> Health -> Decider) --> Plan
    Plan --(JSON, serialised once per tick)--> every client waiting on /v1/sync or /v1/plan

The Controller is the same one a client runs in-process; here its "router" is the ``Board`` (every client's reports
merged) and its signal source scrapes each Triton endpoint once per tick, whatever the number of clients.

HTTP API (JSON; ``Authorization: Bearer <token>`` on every route but /v1/health and /metrics when a token is set):

    POST /v1/sync?after=G&epoch=E&wait=S&eps=V   body: a report (``report``). The report is merged at once (``bye=1``: the
                                           client's last one; it leaves, answer 204); the answer is
                                           the first plan newer than generation G of this plane's epoch E (at once
                                           when the plane has one, or E is another epoch: another replica or a
                                           restart), else held up to S seconds (204 when none came). Answer:
                                           {"plan": Plan.to_dict(), "share": {model: this client's demand share},
                                            "next_tick_s": s, "interval_s": s, "replica": address, "epoch": E,
                                            "endpoints_version": V', "endpoints": the set (``endpoints``; only
                                            when V' is not the client's V of this epoch)}
    GET  /v1/plan?after=G&epoch=E&wait=S   the same without a report (watchers: ``tritonmix status``, tests);
         &eps=V&until=set                  held until the set's version is not V (a follower's set watch)
    GET  /v1/status                        the plane's view: role, clients, per-endpoint load, plan, mode, scrapes
    GET  /v1/samples                       the newest Triton scrape per slot, with the slots' names (a standby
                                           replica mirrors them by name)
    GET  /v1/health                        {"role": "leader"|"standby", "generation": G, "epoch": E}
    GET  /metrics                          Prometheus text: the controller's series and the plane's (one registry)

The endpoint set (``endpoints``): a fleet that names a discovery source (``endpoints: {kubernetes: ...}``) is
followed live: the plane runs the same source a client would (``discovery.source_for``), the Board's slots follow it
(joins, drains, leaves; a join or leave brings the next tick forward), and every answer whose client does not hold
the set's version carries it; followers apply it (``Router.apply_endpoints``) and move the plan to their own slots by
name. A standby replica runs its own source, so it holds the set when it takes over.

The load channel (``load``, UDP on the same port number): followers' interactive requests in flight per endpoint,
summed and sent back every few milliseconds, so that they share each endpoint's in-flight limit.

Why a long-poll and not a stream: one request per tick carries the report in and the plan out, a client's timing
follows the plane's tick (it reports ``next_tick_s`` minus a lead, so reports are fresh when the tick reads them),
and a dead or partitioned plane shows as a failed request with no half-read stream to time out. The answer is the
plan text serialised once per tick and spliced per client with the client's share (``report.plan_message``);
``benches/test_bench_control_plane.py`` measures delivery to 100 followers.

Replicas (``replicas=``, the fleet's ``control_plane`` list, in preference order): a replica finds itself in the
list by the address it listens on or the one it advertises (``advertise=``); a replica whose address is listed
leads while no replica before it answers /v1/health; otherwise it is a standby: it takes the same reports and
decides too (so it is warm), but scrapes no Triton endpoint: it mirrors the first live earlier replica's samples
(one GET per tick). Clients report to every replica and follow the first one in their list that answers.

Security: 127.0.0.1 unless told otherwise; an address beyond loopback needs a bearer token (never logged); TLS with
``tls_cert`` / ``tls_key``. A report is size-capped (``MAX_REPORT_BYTES``, HTTP 413) and validated
(``report.parse_report``: HTTP 400 naming what is wrong); a refused report changes nothing. A sparse report
against a report the plane does not hold gets 409 (the client sends a whole one).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..controller.loop import Controller
from ..controller.probes import ProbeSettings
from ..controller.queueing import QUEUE_MISS_TARGET, UNLIMITED_MISS_TARGET
from ..controller.signals import HttpScraper
from ..discovery import source_for
from ..errors import ConfigError, LaunchError
from .board import Board
from .endpoints import wire_json
from .load import LoadHub
from .mirror import RoleSource, sample_to_dict
from .metrics import plane_registry
from .report import (MAX_REPORT_BYTES, ReportError, StaleBase, fingerprint_of, http_call, parse_report,
                     plan_message)

__all__ = ["ControlPlane", "parse_address", "is_loopback"]

_log = logging.getLogger(__name__)

#: a client silent for this many intervals leaves the merged gauges
CLIENT_EXPIRY_INTERVALS = 3.0
#: the longest a sync or plan request may be held (s)
MAX_WAIT_S = 30.0


def parse_address(text: str, default_port: int = 0) -> Tuple[str, int]:
    """``host:port``, ``host`` or ``:port`` (``[v6]:port`` too) -> (host, port); ConfigError names a bad one."""
    value = text.strip()
    for prefix in ("http://", "https://"):
        if value.startswith(prefix):
            value = value[len(prefix):]
    value = value.rstrip("/")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    host = host or "127.0.0.1"
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"address {text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"address {text!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlPlane:
    """The control plane of one fleet (module docstring). ``start()`` binds and starts ticking; ``address`` is
    then ``host:port``; ``stop()`` ends it (the clients fall back to their own controllers)."""

    def __init__(self, fleet: Any, *, listen: str = "127.0.0.1:0", token: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None, replicas: Sequence[str] = (),
                 metrics_urls: Optional[Mapping[str, str]] = None, probe_settings: Optional[ProbeSettings] = None,
                 peer_ca_file: Optional[str] = None, signal_source: Any = None, load_channel: bool = True,
                 endpoint_source: Any = None, advertise: Optional[str] = None,
                 clock: Any = time.monotonic) -> None:
        """``signal_source``: the Triton signals to use instead of scraping the fleet's endpoints (a
        ``controller.signals.SignalSource``; benchmarks of the plane alone pass a NullSource).
        ``endpoint_source``: the ``discovery.EndpointSource`` to follow instead of the one the fleet names
        (``discovery.source_for``; None for a fleet given as a list: its set never changes). ``advertise``: the
        ``host:port`` this replica is listed under in ``replicas`` when that is not the address it listens on (a
        pod listening on 0.0.0.0 and listed by its DNS name)."""
        self.fleet = fleet
        self._host, self._port = parse_address(listen)
        if not is_loopback(self._host) and not token:
            raise ConfigError(f"the control plane would listen on {self._host}, beyond loopback: give it a bearer "
                              "token (--token-file FILE or the TRITONMIX_CONTROL_PLANE_TOKEN environment variable)")
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("TLS needs both a certificate (tls_cert) and its key (tls_key)")
        self._token = token
        self._advertised = "%s:%d" % parse_address(advertise) if advertise else None
        self._tls = (tls_cert, tls_key) if tls_cert else None
        self._clock = clock
        s = fleet.controller
        self.interval_s = s.interval_s
        names = tuple(e.name for e in fleet.endpoints)
        self.fingerprint = fingerprint_of(fleet)
        self.epoch = os.urandom(4).hex()
        self.endpoint_source = endpoint_source if endpoint_source is not None else source_for(fleet)
        self.board = Board(names, expire_s=CLIENT_EXPIRY_INTERVALS * s.interval_s, clock=clock, fleet=fleet,
                           discovery=self.endpoint_source is not None)
        self._set_json: Tuple[int, str] = (0, "")
        #: the load channel (``load``): followers' in-flight per endpoint, summed and sent back every few ms
        self._load_channel = load_channel
        self.load = LoadHub(len(names), token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        peer_ssl = ssl.create_default_context(cafile=peer_ca_file) if peer_ca_file else None
        scraper = signal_source if signal_source is not None else HttpScraper.for_fleet(
            fleet, metrics_urls, settings=probe_settings, timeout_s=s.scrape_timeout_s, clock=clock)
        self.source = RoleSource(scraper, len(names), clock, headers, peer_ssl)
        self.controller = Controller(fleet, self.board, source=self.source, clock=clock,
                                     report_cadence_s=s.interval_s)
        self.controller.add_listener(self._on_tick)
        self.registry = plane_registry(self)
        self.replicas = tuple(replicas)
        self._peer_ssl = peer_ssl
        self.role = "leader"
        self.ticks = 0
        self.refused: Dict[str, int] = {}
        self.served = 0
        self._published: Optional[Tuple[int, str, int, str]] = None  # (generation, plan JSON, set version, set JSON)
        self._tick_at = 0.0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._changed: Optional[asyncio.Event] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Any = None
        self._stop = threading.Event()
        self._peer_thread: Optional[threading.Thread] = None
        self.address = ""

    # ---- life cycle ------------------------------------------------------------------------------------------
    @property
    def names(self) -> Tuple[str, ...]:
        """The endpoint of each slot (a vacant slot keeps the name of the endpoint that left it)."""
        return self.board.endpoint_names()

    @property
    def url(self) -> str:
        return ("https://" if self._tls else "http://") + self.address

    def start(self, tick: bool = True) -> "ControlPlane":
        """Bind and serve; with ``tick=False`` the controller's thread does not start and the caller ticks
        (``tick()``: benchmarks and tests that step the plane)."""
        if self._thread is not None:
            return self
        ready: "concurrent.futures.Future[str]" = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="tritonmix-plane-http", daemon=True)
        self._thread.start()
        try:
            self.address = ready.result(timeout=30)
        except Exception as exc:
            self._thread = None
            raise LaunchError(f"control plane: cannot listen on {self._host}:{self._port}: {exc}") from exc
        self._update_role()
        if self.endpoint_source is not None:
            self.endpoint_source.start(self._discovered)
        self._peer_thread = threading.Thread(target=self._watch_peers, name="tritonmix-plane-peers", daemon=True)
        self._peer_thread.start()
        if tick:
            self.controller.start()
        _log.info("control plane for %d endpoints on %s (%s)", len(self.names), self.url, self.role)
        return self

    def stop(self) -> None:
        """Stop ticking and serving (its clients fall back within two intervals); a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.endpoint_source is not None:
            self.endpoint_source.stop()
        self.controller.stop()
        loop = self._loop
        if loop is not None and self._runner is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=5)
            except Exception:  # noqa: BLE001 - stopping anyway
                _log.debug("control plane HTTP cleanup failed", exc_info=True)
            loop.call_soon_threadsafe(self.load.close)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._peer_thread is not None:
            self._peer_thread.join(5)

    close = stop

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def tick(self) -> Any:
        """One tick now (merge, decide, publish); returns the Plan."""
        return self.controller.tick()

    # ---- the endpoint set --------------------------------------------------------------------------------------
    def _discovered(self, states: Any) -> None:
        """The source's ``on_change``: the Board's slots follow (the Controller at its next tick, brought forward
        by a join or leave) and so does the load channel; a set that cannot be applied is logged and changes
        nothing."""
        try:
            self.board.apply_endpoints(states)
        except ValueError as exc:
            _log.error("discovered endpoints not applied: %s", exc)
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.load.follow, *self.board.set_version())

    def _set_text(self, version: int, wire: Any) -> str:
        """The set's JSON, serialised once per version."""
        if self._set_json[0] != version:
            self._set_json = (version, wire_json(wire))
        return self._set_json[1]

    # ---- the tick's output ----------------------------------------------------------------------------------
    def _on_tick(self, _snapshot: Any) -> None:
        """The controller's listener, on its thread after every tick: publish the plan, drop silent clients."""
        self.ticks += 1
        self.board.expire()
        # followers off the load channel each hold a sliver of an endpoint's in-flight limit, so the limits no
        # longer spill the queue's tail: then plan each endpoint's load for the tail the queue model allows
        # without limits (one client, or every client on the channel: the limits hold, the usual target)
        unshared = self.board.client_count > max(1, self.load.clients)
        self.controller.observer.queue_miss_target = UNLIMITED_MISS_TARGET if unshared else QUEUE_MISS_TARGET
        plan = self.controller.plan
        if plan is None:
            return
        self._tick_at = self._clock()
        version, wire = self.board.reaped  # the set this tick's plan is over
        published = (plan.generation, plan.to_json(), version, self._set_text(version, wire))
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._publish, published)

    def _publish(self, published: Tuple[int, str, int, str]) -> None:
        self._published = published
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # ---- replicas ---------------------------------------------------------------------------------------------
    def _earlier(self) -> List[str]:
        """The replicas listed before this one (all of them when this one is not listed: it never leads them)."""
        mine = {self.address, f"{self._host}:{self._port}", self._advertised}
        urls = [r if r.startswith(("http://", "https://")) else "http://" + r for r in self.replicas]
        for k, r in enumerate(self.replicas):
            if parse_address(r)[1] and "%s:%d" % parse_address(r) in mine:
                return urls[:k]
        return urls

    def _update_role(self) -> None:
        live = None
        for base in self._earlier():
            try:
                status, _ = http_call(base + "/v1/health", timeout_s=max(0.05, 0.25 * self.interval_s),
                                      ssl_context=self._peer_ssl)
            except OSError:
                continue
            if status == 200:
                live = base
                break
        role = "standby" if live is not None else "leader"
        if role != self.role or self.source.mirror != live:
            _log.info("control plane %s: %s%s", self.address, role, f" (mirroring {live})" if live else "")
        self.role, self.source.mirror = role, live

    def _watch_peers(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.replicas:
                self._update_role()

    # ---- HTTP -------------------------------------------------------------------------------------------------
    def _serve(self, ready: "concurrent.futures.Future[str]") -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=MAX_REPORT_BYTES, middlewares=[self._errors])
        app.add_routes([web.post("/v1/sync", self._sync), web.get("/v1/plan", self._plan),
                        web.get("/v1/status", self._status), web.get("/v1/samples", self._samples),
                        web.get("/v1/health", self._health), web.get("/metrics", self._metrics)])
        try:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(runner.setup())
            ctx = None
            if self._tls:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(*self._tls)
            site = web.TCPSite(runner, self._host, self._port, ssl_context=ctx, backlog=2048)
            loop.run_until_complete(site.start())
            sock = site._server.sockets[0]  # type: ignore[union-attr]
            host = self._host if ":" not in self._host else f"[{self._host}]"
            self._runner = runner
            if self._load_channel:
                try:
                    loop.run_until_complete(loop.create_datagram_endpoint(
                        lambda: self.load, local_addr=(self._host, sock.getsockname()[1])))
                except OSError as exc:  # followers then fall back to their share of each limit
                    _log.warning("control plane: no load channel (UDP port %d: %s)", sock.getsockname()[1], exc)
            ready.set_result(f"{host}:{sock.getsockname()[1]}")
        except Exception as exc:  # noqa: BLE001 - reported to start()
            ready.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            try:  # one more turn: the load channel's transport closes its UDP socket in a callback stop() queued
                loop.run_until_complete(asyncio.sleep(0))
            finally:
                loop.close()

    def _authorised(self, request: Any) -> bool:
        if not self._token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    def _refuse(self, reason: str, status: int, message: str) -> Any:
        from aiohttp import web

        self.refused[reason] = self.refused.get(reason, 0) + 1
        return web.json_response({"error": message}, status=status)

    @property
    def _errors(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def middleware(request: Any, handler: Any) -> Any:
            open_routes = ("/v1/health", "/metrics")
            if request.path not in open_routes and not self._authorised(request):
                return self._refuse("token", 401, "missing or wrong bearer token (Authorization: Bearer ...)")
            try:
                return await handler(request)
            except web.HTTPRequestEntityTooLarge:
                return self._refuse("size", 413, f"report is larger than {MAX_REPORT_BYTES} bytes")
            except StaleBase as exc:
                return web.json_response({"error": str(exc)}, status=409)
            except ReportError as exc:
                return self._refuse("malformed", 400, str(exc))
        return middleware

    async def _sync(self, request: Any) -> Any:
        body = await request.read()
        report = parse_report(body, self.board.slot_names(), self.fingerprint,  # type: ignore[arg-type]
                              self.board.base_of)
        final = request.query.get("bye") == "1"
        self.board.ingest(report, final=final)
        if final:
            from aiohttp import web

            return web.Response(status=204)
        return await self._answer(request, report.client)

    async def _plan(self, request: Any) -> Any:
        return await self._answer(request, None)

    async def _answer(self, request: Any, client: Optional[str]) -> Any:
        from aiohttp import web

        q = request.query
        try:
            after = int(q.get("after", "0"))
            wait_s = min(max(float(q.get("wait", 2 * self.interval_s)), 0.0), MAX_WAIT_S)
        except ValueError:
            raise ReportError("query 'after' must be an integer and 'wait' a number of seconds") from None
        same_epoch = q.get("epoch") == self.epoch
        held = q.get("eps") if same_epoch else None
        until_set = q.get("until") == "set" and held is not None  # a follower's set watch: only a new set answers
        deadline = self._clock() + wait_s
        while True:
            published = self._published
            if published is not None and (not same_epoch or (str(published[2]) != held if until_set
                                                              else published[0] > after)):
                break
            left = deadline - self._clock()
            if left <= 0 or self._changed is None:
                return web.Response(status=204)
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return web.Response(status=204)
        share = self.board.share(client) if client is not None else None
        next_tick_s = max(0.0, self._tick_at + self.interval_s - self._clock())
        self.served += 1
        body = plan_message(published[1], share, next_tick_s, self.interval_s, self.address, self.epoch,
                            published[0], published[2], None if held == str(published[2]) else published[3])
        return web.Response(body=body, content_type="application/json")

    async def _health(self, request: Any) -> Any:
        from aiohttp import web

        generation = self._published[0] if self._published else 0
        return web.json_response({"role": self.role, "generation": generation, "epoch": self.epoch})

    async def _samples(self, request: Any) -> Any:
        from aiohttp import web

        now = self._clock()
        latest = list(self.source.latest)
        names = self.board.slot_names()[: len(latest)]
        return web.json_response({"samples": [None if s is None else sample_to_dict(s, now) for s in latest],
                                  "names": list(names)}, dumps=_dumps)

    async def _status(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(self.status(), dumps=_dumps)

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- the view -------------------------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        """The plane's view as plain data (``tritonmix status --control-plane`` shows it)."""
        snap = self.controller.snapshot()
        plan = self.controller.plan
        scrapes = self.source.scrapes
        rows = []
        stats = self.board.dispatchers()
        slots = self.board.endpoints
        states = [None if v else slots.state(i) for i, v in enumerate(tuple(slots.vacant))]
        for i, name in enumerate(self.names[: len(states)]):
            if states[i] is None:  # vacant: its endpoint left
                continue
            row: Dict[str, Any] = {"name": name, "slot": i, "state": states[i],
                                   "in_flight": sum(d.stats().in_flight[i] for d in stats.values()
                                                    if i < len(d.stats().in_flight)),
                                   "scrapes": scrapes[i] if scrapes is not None and i < len(scrapes) else None}
            if snap is not None and i < len(snap.endpoints) and snap.endpoints[i].name == name:
                e = snap.endpoints[i]
                row.update(pool=e.pool, ready=e.ready, ejected=e.ejected, mu_rps=e.mu_rps,
                           assigned_rps=e.assigned_rps, interactive_weight=e.interactive_weight,
                           cost_per_inference=e.cost_per_inference)
            rows.append(row)
        return {"address": self.address, "role": self.role, "epoch": self.epoch,
                "mirroring": self.source.mirror, "interval_s": self.interval_s, "ticks": self.ticks,
                "generation": plan.generation if plan else 0, "mode": plan.mode if plan else None,
                "configured_mode": self.fleet.mode,
                "desired_replicas": dict(snap.desired_replicas) if snap else {},
                "demand_rps": {f"{m}/{rc}": r for (m, rc), r in (snap.demand_rps.items() if snap else ())},
                "clients": [dataclasses.asdict(c) for c in self.board.clients()],
                "reports": self.board.reports, "refused": dict(self.refused), "plans_served": self.served,
                "load_channel": {"clients": self.load.clients, "received": self.load.received,
                                 "sent": self.load.sent, "dropped": self.load.dropped,
                                 "in_flight": self.load.totals()},
                "scrapes": list(scrapes) if scrapes is not None else None, "mirrored": self.source.mirrored,
                "endpoints": rows, "endpoints_version": slots.version, "discovery": slots.discovery,
                "plan": plan.to_dict() if plan else None}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
