"""A client that follows a control plane: it reports, applies the plans it receives, and runs its own controller
only while no plan comes.

    one Link (thread) per replica, in the fleet's order:
        loop: wait until the plane's next tick minus LEAD of an interval (at once before the first plan)
              POST /v1/sync?after=G&epoch=E   body: this client's report (``report.build_report``), sparse
                                              against the last one this replica answered (409: a whole one next)
              the answer (held by the plane until its next plan) -> Follower.offer
        a failed request (refused, reset, timed out, 5xx) marks the link down and retries after an interval,
        jittered per client (x uniform[0.8, 1.2]) so that clients do not return together
    Follower.offer: a plan is applied when it comes from the first link in list order that delivered a plan within
        the last FOLLOW_INTERVALS intervals (the replica in charge); its in-flight limits are scaled to this client's
        share of the model's demand (``scale_limits``); a plan from another replica than the last one applied
        starts the generation count afresh (each replica numbers its own)
    the endpoint set (``endpoints``): each sync says which version of the replica's set this client holds (``eps``)
        and the answer carries the set when that is not the one its plan is over. A plane that follows a discovery
        source: before its plan is applied, the set is applied to the router (``Router.apply_endpoints``: joins,
        drains, leaves, within the interval that brought it); every plan is moved from the plane's slots to the
        router's by name (``endpoints.remap_plan``); while the local controller decides, the client's own source
        keeps the set (``on_fallback``). Between syncs a second request per replica of a discovering
        plane watches its set (GET /v1/plan?eps=V&until=set, held until the version moves): a change reaches the
        router with the plan of the tick it brought forward, not at the next sync.
    fallback: no plan applied for FOLLOW_INTERVALS intervals -> a local Controller over the same router starts (it
        scrapes and decides alone, as a client without a plane does); the first plan applied after that stops it
        and hands its router back to the plane's plans
    load channel (``load``, a thread): the follower tells the replica it follows its interactive requests in flight
        per endpoint every few milliseconds and gets back the sum over every follower; it sets the others' part on
        its dispatchers (``Dispatcher.set_external``) and applies the plan's in-flight limits whole, so that all
        followers together hold an endpoint's limit as one client does. While no sum has come for STALE_S (no
        channel, lost datagrams, fallback) the limits are scaled to this client's demand share instead.
Passive ejection after connection failures stays the router's own (it saw them first: ``Router``'s detector) and
is reported in the next report's ``ejected``. A stale or malformed plan is refused by the Applier (generation,
endpoints, shapes, weights, limits), logged and counted in ``refused``; nothing a plane sends can make a request
fail. The follower's own log (``decisions()``, kind "plane") says when it followed, fell back and came back.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import random
import ssl
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..controller.applier import Applier
from ..controller.decisions import Decision, DecisionLog
from ..controller.plan import ModelRoute, Plan
from .endpoints import PlaneSet, parse_set, remap_plan
from .load import STALE_S, TELL_PERIOD_S, LoadTeller
from .report import Snapshot, build_report, fingerprint_of, http_call, new_client_id

__all__ = ["Follower", "scale_limits", "FOLLOW_INTERVALS", "LEAD"]

_log = logging.getLogger(__name__)

#: no plan applied for this many intervals: fall back to the local controller
FOLLOW_INTERVALS = 2.0
#: a report is sent this share of an interval before the plane's next tick
LEAD = 0.15
#: the fallback watch looks this many times per interval
WATCH_SPLIT = 10


def scale_limits(plan: Plan, share: Mapping[str, float]) -> Plan:
    """The plan with each model's in-flight limits L_i scaled to this client's share s_m of the model's demand:
    max(1, round(L_i x s_m)) where L_i > 0 (0 stays "no limit"); a model without a share keeps its limits. The
    sum over clients is L_i up to rounding, and at least one slot each: clients together queue about what one
    client with the whole demand would."""
    if not share:
        return plan
    models = []
    for name, route in plan.models:
        s = share.get(name)
        if s is None or not math.isfinite(s):
            models.append((name, route))
            continue
        models.append((name, _scaled(route, min(max(s, 0.0), 1.0))))
    return Plan(plan.generation, plan.at_s, plan.endpoints, plan.available, plan.default, tuple(models))


def _scaled(route: ModelRoute, s: float) -> ModelRoute:
    limits = tuple(max(1, int(round(x * s))) if x > 0 else 0 for x in route.limits)
    inner = route.proportional
    return ModelRoute(route.plan, limits, _scaled(inner, s) if inner is not None else None)


class _Link:
    """One replica: its connection and what it last delivered."""

    def __init__(self, base: str) -> None:
        if not base.startswith(("http://", "https://")):
            base = "http://" + base
        self.base = base
        parts = urllib.parse.urlsplit(base)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or (443 if self.https else 80)
        self.conn: Optional[http.client.HTTPConnection] = None
        self.delivered_at = -math.inf     # when it last delivered a plan (the follower's clock)
        self.generation = 0
        self.epoch = ""
        self.next_send_at = 0.0
        self.failures = 0
        self.last_error = ""
        #: the seq and snapshot of the last report this replica answered: the next one is sparse against it
        self.acked: Optional[Tuple[int, Snapshot]] = None
        #: the replica's endpoint set as last sent (of its epoch ``epoch``), and the set watch's connection
        self.plane_set: Optional[PlaneSet] = None
        self.watch_conn: Optional[http.client.HTTPConnection] = None


class Follower:
    """Follows the control plane replicas ``replicas`` (module docstring) for one client's ``router``.
    ``local_factory()`` builds the fallback controller (not started). The controller-shaped read-outs
    (``decisions``, ``snapshot``, ``mode``, ``plan``) answer for whichever is in charge."""

    def __init__(self, fleet: Any, router: Any, replicas: Sequence[str], local_factory: Callable[[], Any], *,
                 token: Optional[str] = None, ca_file: Optional[str] = None, load_channel: bool = True,
                 clock: Callable[[], float] = time.monotonic, seed: Optional[int] = None) -> None:
        if not replicas:
            raise ValueError("a Follower needs at least one control plane replica")
        self.fleet, self.router = fleet, router
        self.interval_s = fleet.controller.interval_s
        self.client_id = new_client_id()
        self._fingerprint = fingerprint_of(fleet)
        self._clock = clock
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._links = [_Link(r) for r in replicas]
        self._rng = random.Random(seed)
        self._factory = local_factory
        self.applier = Applier(router, follow_available=True)
        self.local: Any = None
        self.fallbacks = 0
        self._log = DecisionLog()
        self._lock = threading.Lock()
        self._seq = 0
        self._applied_at = -math.inf
        self._applied_from: Optional[str] = None
        self._started_at = clock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.load = LoadTeller(router, token, int.from_bytes(hashlib.sha256(self.client_id.encode()).digest()[:8],
                                                             "little")) if load_channel else None
        #: the load channel's sums are fresh: the plan's limits apply whole (else scaled to the demand share)
        self.load_fresh = False
        self._plan: Optional[Plan] = None
        self._share: Mapping[str, float] = {}
        #: (replica, epoch, set version) of the plane set last applied to the router
        self._set_applied: Optional[Tuple[str, str, int]] = None
        #: sets applied to the router so far (a discovering plane's joins, drains and leaves)
        self.sets_applied = 0
        self._fallback_hook: Optional[Callable[[bool], None]] = None

    # ---- read-outs ------------------------------------------------------------------------------------------
    @property
    def following(self) -> Optional[str]:
        """The replica whose plans are in force (its base URL), None while the local controller decides."""
        with self._lock:
            return self._applied_from if self.local is None else None

    @property
    def plan(self) -> Optional[Plan]:
        local = self.local
        return local.plan if local is not None else self.applier.plan

    @property
    def mode(self) -> Optional[str]:
        plan = self.plan
        return plan.mode if plan is not None else None

    @property
    def plan_age_s(self) -> float:
        return self._clock() - self._applied_at

    @property
    def refused(self) -> Dict[str, int]:
        return dict(self.applier.refused)

    @property
    def source(self) -> Any:
        """The local controller's signal source while it runs (it scrapes), else None (a follower does not)."""
        local = self.local
        return local.source if local is not None and hasattr(local, "source") else None

    def decisions(self, kind: Optional[str] = None) -> List[Decision]:
        local = self.local
        own = self._log.items(kind)
        theirs = local.decisions(kind) if local is not None else []
        return sorted(own + list(theirs), key=lambda d: d.at_s)

    def snapshot(self) -> Any:
        local = self.local
        return local.snapshot() if local is not None else None

    # ---- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> "Follower":
        if self._threads:
            return self
        for k, link in enumerate(self._links):
            t = threading.Thread(target=self._run_link, args=(link,), name=f"tritonmix-follow-{k}", daemon=True)
            self._threads.append(t)
            self._threads.append(threading.Thread(target=self._run_set_watch, args=(link,),
                                                  name=f"tritonmix-follow-set-{k}", daemon=True))
        t = threading.Thread(target=self._watch, name="tritonmix-follow-watch", daemon=True)
        self._threads.append(t)
        if self.load is not None:
            self._threads.append(threading.Thread(target=self._run_load, name="tritonmix-follow-load", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following: a last report (``bye``) to every replica that answers, so its requests leave the
        plane's view at once, then the threads and the local controller stop."""
        self._stop.set()
        for link in self._links:
            if link.delivered_at > -math.inf:
                body, _ = build_report(self.router, self.client_id, self._seq + 1, self._fingerprint,
                                       self.plan_age_s)
                try:
                    http_call(link.base + "/v1/sync?bye=1&wait=0", method="POST", body=body, headers=self._headers,
                              timeout_s=0.5, ssl_context=self._ssl)
                except OSError:
                    pass
        for link in self._links:
            for conn in (link.conn, link.watch_conn):
                if conn is not None:
                    try:
                        conn.close()
                    except OSError:
                        pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout_s)
        with self._lock:
            local, self.local = self.local, None
        if local is not None:
            local.stop()
            local.applier.detach()
        self.applier.detach()
        if self.load is not None:
            self.load.close()

    close = stop

    def on_fallback(self, hook: Optional[Callable[[bool], None]]) -> None:
        """``hook(True)`` after the local controller took over, ``hook(False)`` when a plan is followed again
        (before the plane's set is applied): a client of a discovering fleet runs its own source in between, so that
        its set does not go stale while no plane answers. It must be quick."""
        self._fallback_hook = hook

    # ---- following ---------------------------------------------------------------------------------------------
    def offer(self, link: _Link, plan: Plan, share: Mapping[str, float]) -> bool:
        """A plan delivered by ``link``: applied when that replica is in charge (module docstring)."""
        now = self._clock()
        with self._lock:
            link.delivered_at = now
            window = FOLLOW_INTERVALS * self.interval_s
            chosen = next((k for k in self._links if now - k.delivered_at <= window), None)
            if chosen is not link:
                return False
            current = self.applier.plan
            if self.local is None and current is not None and self._applied_from == link.base and \
                    plan.generation <= current.generation:
                return False  # the set watch and the sync both deliver a plan: the second one is not news
            local = self.local
            if local is not None:
                self.local = None
            if local is not None or self._applied_from != link.base:
                self.applier.release()
            if local is not None and self._fallback_hook is not None:
                self._fallback_hook(False)
            plan = self._follow_set(link, plan)
            self._plan, self._share = plan, share
            applied = self.applier.offer(plan if self.load_fresh else scale_limits(plan, share), source=link.base)
            if applied:
                if self._applied_from != link.base or local is not None:
                    self._note(now, f"following the control plane at {link.base}"
                               + (" (the local controller stops)" if local is not None else ""))
                self._applied_at, self._applied_from = now, link.base
        if local is not None:
            local.stop()
            local.applier.detach()
        return applied

    def _follow_set(self, link: _Link, plan: Plan) -> Plan:
        """Apply the replica's set to the router when its plane follows a discovery source and the router does not
        hold that version yet, then move ``plan`` to the router's slots by name, and tell the load channel which
        slot is which (lock held)."""
        held = link.plane_set
        if held is None:
            return plan
        stamp = (link.base, link.epoch, held.version)
        if held.discovery and stamp != self._set_applied:
            try:
                self.router.apply_endpoints(held.states)
            except ValueError as exc:  # a set the router cannot take: the last one stays, and so does its plan
                _log.error("the control plane's endpoint set %d was not applied: %s", held.version, exc)
                return plan
            self._set_applied = stamp
            self.sets_applied += 1
        names = tuple(self.router.endpoint_names())
        vacant = self.router.vacant() if hasattr(self.router, "vacant") else ()
        if self.load is not None:
            pairs = [(k, held.slots[x]) for k, x in enumerate(names)
                     if x in held.slots and not (k < len(vacant) and vacant[k])]
            self.load.set_map(held.version, len(plan.endpoints), [a for a, _ in pairs], [b for _, b in pairs])
        if names == tuple(plan.endpoints) and not any(vacant):
            return plan  # a fixed list on both sides: the plan is in our slots already
        return remap_plan(plan, held.slots, names, vacant)

    def _run_load(self) -> None:
        """The load channel's thread (module docstring): tell, take the sums, and switch the limits between whole
        and scaled as the sums turn fresh or stale."""
        import select

        teller = self.load
        while not self._stop.is_set():
            with self._lock:
                link = next((k for k in self._links if k.base == self._applied_from), None) \
                    if self.local is None else None
            teller.retarget(link.host if link is not None else None, link.port if link is not None else 0)
            now = self._clock()
            try:
                teller.step(now)
            except Exception:  # noqa: BLE001 - the channel only sharpens the limits; the plan still applies
                _log.exception("load channel step failed")
            fresh = link is not None and now - teller.heard_at <= STALE_S
            if fresh != self.load_fresh:
                self._set_limits(fresh)
            try:
                select.select([teller.fileno], [], [], TELL_PERIOD_S)
            except (OSError, ValueError):
                return

    def _set_limits(self, fresh: bool) -> None:
        with self._lock:
            self.load_fresh = fresh
            plan = self._plan
            if plan is None or self.local is not None:
                return
            if not fresh:
                self.load.clear()
            chosen = plan if fresh else scale_limits(plan, self._share)
            for model, request_class in self.router.dispatchers():
                if request_class == "interactive":
                    self.router.set_limits(model, request_class, chosen.limits(model))

    def _watch(self) -> None:
        """Fall back when no plan was applied for FOLLOW_INTERVALS intervals (module docstring)."""
        while not self._stop.wait(self.interval_s / WATCH_SPLIT):
            now = self._clock()
            since = max(self._applied_at, self._started_at)
            with self._lock:
                if self.local is not None or now - since <= FOLLOW_INTERVALS * self.interval_s:
                    continue
                self.applier.release()
                self._applied_from = None
                self.fallbacks += 1
                errors = "; ".join(f"{k.base}: {k.last_error or 'no plan'}" for k in self._links)
                self._note(now, f"no plan for {now - since:.2f} s ({errors}): the local controller decides",
                           no_plan_s=now - since)
                try:
                    local = self._factory()
                    local.start()
                except Exception:  # noqa: BLE001 - static weights stay in force rather than no routing at all
                    _log.exception("the fallback controller did not start")
                    continue
                self.local = local
                self._set_applied = None  # the router's set is the client's own from here: the plane's, on return
            hook = self._fallback_hook
            if hook is not None:
                hook(True)

    def _note(self, now: float, message: str, **figures: float) -> None:
        _log.info("%s", message)
        self._log.add(Decision(now, "plane", message, figures=figures))

    def _run_link(self, link: _Link) -> None:
        while not self._stop.is_set():
            delay = link.next_send_at - self._clock()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self._sync(link)
            except Exception as exc:  # noqa: BLE001 - any failure: this replica is down for now
                if self._stop.is_set():
                    return
                link.failures += 1
                link.last_error = f"{type(exc).__name__}: {exc}"[:200]
                link.delivered_at = -math.inf
                self._close(link)
                link.next_send_at = self._clock() + self.interval_s * self._rng.uniform(0.8, 1.2)

    def _sync(self, link: _Link) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
        body, snap = build_report(self.router, self.client_id, seq, self._fingerprint, self.plan_age_s,
                                  base=link.acked)
        link.acked = None  # until this one is answered
        wait_s = FOLLOW_INTERVALS * self.interval_s
        fields = {"after": link.generation, "epoch": link.epoch, "wait": f"{wait_s:.3f}"}
        if link.plane_set is not None:
            fields["eps"] = link.plane_set.version
        query = urllib.parse.urlencode(fields)
        if link.conn is None:
            link.conn = (http.client.HTTPSConnection(link.host, link.port, timeout=wait_s + 1.0, context=self._ssl)
                         if link.https else http.client.HTTPConnection(link.host, link.port, timeout=wait_s + 1.0))
        link.conn.request("POST", "/v1/sync?" + query, body=body, headers=self._headers)
        resp = link.conn.getresponse()
        data = resp.read()
        if resp.status == 409:  # the replica does not hold our base (it restarted): a whole report next
            link.next_send_at = 0.0
            return
        if resp.status in (200, 204):
            link.acked = (seq, snap)
        if resp.status == 204:
            link.next_send_at = 0.0
            return
        if resp.status != 200:
            message = data[:300].decode(errors="replace")
            raise OSError(f"HTTP {resp.status}: {message}")
        try:
            msg = json.loads(data)
            plan = Plan.from_dict(msg["plan"])
            plane_set = parse_set(msg["endpoints"]) if "endpoints" in msg else None
        except (ValueError, KeyError, TypeError) as exc:
            self.applier.refused["malformed"] = self.applier.refused.get("malformed", 0) + 1
            _log.warning("a malformed plan from %s was refused: %s", link.base, exc)
            raise OSError(f"malformed plan: {exc}") from None
        epoch = str(msg.get("epoch", ""))
        version = msg.get("endpoints_version")
        with self._lock:
            held = link.plane_set if epoch == link.epoch else None
            if plane_set is not None and (held is None or plane_set.version >= held.version):
                held = link.plane_set = plane_set
            elif epoch != link.epoch:
                link.plane_set = None
            if version is not None and (held is None or held.version < version):
                # a plan over a set we do not hold: ask again at once, without its generation, to get both
                link.plane_set, link.epoch, link.next_send_at = None, epoch, 0.0
                return
            stale = version is not None and held is not None and held.version > version  # the watch brought newer
        link.generation, link.epoch = max(plan.generation, link.generation) if stale else plan.generation, epoch
        link.failures, link.last_error = 0, ""
        lead = LEAD * self.interval_s
        link.next_send_at = self._clock() + max(0.0, float(msg.get("next_tick_s", self.interval_s)) - lead)
        if not stale:
            self.offer(link, plan, msg.get("share") or {})

    def _run_set_watch(self, link: _Link) -> None:
        """The set watch of one replica (module docstring): only while its plane follows a discovery source."""
        while not self._stop.is_set():
            held = link.plane_set
            if held is None or not held.discovery or link.delivered_at == -math.inf:
                if self._stop.wait(self.interval_s / WATCH_SPLIT):
                    return
                continue
            try:
                self._watch_set(link, held)
            except Exception as exc:  # noqa: BLE001 - the sync still brings the set, an interval later
                if self._stop.is_set():
                    return
                _log.debug("set watch of %s failed: %s", link.base, exc)
                conn, link.watch_conn = link.watch_conn, None
                if conn is not None:
                    conn.close()
                if self._stop.wait(self.interval_s):
                    return

    def _watch_set(self, link: _Link, held: PlaneSet) -> None:
        wait_s = self.interval_s
        query = urllib.parse.urlencode({"after": link.generation, "epoch": link.epoch, "eps": held.version,
                                        "until": "set", "wait": f"{wait_s:.3f}"})
        if link.watch_conn is None:
            link.watch_conn = (http.client.HTTPSConnection(link.host, link.port, timeout=wait_s + 1.0,
                                                           context=self._ssl) if link.https else
                               http.client.HTTPConnection(link.host, link.port, timeout=wait_s + 1.0))
        link.watch_conn.request("GET", "/v1/plan?" + query, headers=self._headers)
        resp = link.watch_conn.getresponse()
        data = resp.read()
        if resp.status == 204:
            return
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        msg = json.loads(data)
        plan = Plan.from_dict(msg["plan"])
        plane_set = parse_set(msg["endpoints"]) if "endpoints" in msg else None
        with self._lock:
            if plane_set is None or str(msg.get("epoch", "")) != link.epoch or link.plane_set is not held:
                return  # another epoch, or the sync moved on meanwhile: the sync takes it from here
            link.plane_set = plane_set
        self.offer(link, plan, self._share)

    def _close(self, link: _Link) -> None:
        conn, link.conn = link.conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"<Follower of {', '.join(k.base for k in self._links)} following={self.following}>"
