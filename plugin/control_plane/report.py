"""A client's report to the control plane: what one client process saw since it started, as cumulative counters
and current gauges, in fleet order. Built from the client's router (``build_report``), checked by the plane
(``parse_report``), which turns the counters into deltas per client (``board.Board``).

Wire format (JSON, one object, at most ``MAX_REPORT_BYTES``)::

    {"v": 1,
     "client": "host/pid/random",           # 1-128 printable characters, stable for the client's life
     "fleet": "<fingerprint>",              # fingerprint_of(fleet): the fleet's static parts; both sides agree
     "seq": 17,                             # the client's report number (0, 1, ...)
     "names": ["a", null, ...],             # the endpoint of each of the client's slots (null: vacant); absent:
                                            # the plane's own slots, in order (a client of a static fleet)
     "plan_age_s": 0.41,                    # how long the plan in force has been in force at the client (-1: none)
     "endpoint": {"ok": [..n..], "over_slo": [..n..], "failed": [..n..],         # cumulative, per endpoint
                  "abandoned": [..n..]},     # optional: attempts among the successes that ended because the
                                             # client cancelled them (a hedge's loser; absent: none)
     "keys": [{"model": "m", "class": "interactive",                            # per dispatcher
               "arrivals": 123,                                                   # cumulative user requests
               "successes": [..n..], "failures": [..n..],                         # cumulative
               "in_flight": [..n..], "latency_s": [..n.., null where unknown]}],  # now
     "ejected": ["name", ...]}              # endpoints the client's own passive ejection holds out now

Per-endpoint arrays are in the client's slot order (``names``); the plane adds them to its slots of the same name
(``board.Board``) and drops a name it no longer has. A client whose slots changed since its base sends a whole
report.

``abandoned`` is read with the keys' successes (``Router.stall_view``: both or neither hold a cancelled attempt), so
that the plane's stall watch does not take a cancelled attempt for an answer of the server, as a client's own does.

Counters are cumulative so that a lost report loses nothing (the next one carries it); the plane takes a client's
first report as its baseline (a client that ran before it connected does not land its whole history in one tick).

Sparse reports: a client that got an answer to its report ``seq = B`` (so the plane holds it) may send the next one
relative to it: ``"base": B`` (``names`` left out when unchanged), and per array only the endpoints whose figure changed, as ``"idx": [...]`` beside
the values at those indexes (``endpoint`` and each key; a key left out is unchanged). A client at a few requests a
second touches a few of 256 endpoints per tick: its report shrinks from ~20 KB to a few hundred bytes, and so does
the plane's work to read it. A plane that no longer holds report B (it restarted, the client expired) answers 409
and the client sends a whole report.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import ssl
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError

__all__ = ["MAX_REPORT_BYTES", "ReportError", "StaleBase", "Snapshot", "KeyReport", "Report", "build_report", "parse_report",
           "fleet_fingerprint", "fingerprint_of", "new_client_id", "plan_message", "http_call"]

#: the largest report the plane reads (bytes); a fleet of 256 endpoints with a handful of models needs ~40 KB
MAX_REPORT_BYTES = 1 << 20
#: dispatchers per report (models x request classes); more is refused
MAX_KEYS = 256
#: endpoint slots per report; more is refused
MAX_SLOTS = 65535
_CLASSES = ("interactive", "batch")


class ReportError(ConfigError):
    """A report the plane refuses; the message names what is wrong (the plane answers it with HTTP 400)."""


class StaleBase(ReportError):
    """A sparse report whose base the plane does not hold (HTTP 409: send a whole report)."""


#: what a client remembers of the last report the plane acknowledged, to send the next one sparse: per endpoint
#: counters (ok, over_slo, failed) and per key (arrivals, successes, failures, in flight, latency)
Snapshot = Dict[str, Any]


def fleet_fingerprint(names: Sequence[str]) -> str:
    """A short digest of the endpoint names in fleet order: a report or plan for another fleet (or order) differs."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def fingerprint_of(fleet: Any) -> str:
    """What a plane and its clients must agree on: the fleet's static parts. A fleet given as a list: its endpoint
    names in order (``fleet_fingerprint``: a client of another list is refused, as a mistyped fleet file must be).
    A discovering fleet (``endpoints: {kubernetes: ...}``): the discovery's namespace, fleet label and protocol,
    and the SLO, never the endpoints found (they change; followers take the plane's set)."""
    discovery = getattr(fleet, "discovery", None)
    if discovery is None:
        return fleet_fingerprint(tuple(e.name for e in fleet.endpoints))
    static = {"kubernetes": [discovery.namespace, discovery.fleet, discovery.protocol], "slo_ms": fleet.slo_ms}
    return hashlib.sha256(json.dumps(static, sort_keys=True).encode()).hexdigest()[:16]


def new_client_id() -> str:
    """``host/pid/random``: unique per client object, readable in ``tritonmix status``."""
    return f"{socket.gethostname()[:64]}/{os.getpid()}/{os.urandom(3).hex()}"


@dataclasses.dataclass(frozen=True, eq=False)
class KeyReport:
    model: str
    request_class: str
    arrivals: int
    successes: np.ndarray               # int64 per endpoint, cumulative
    failures: np.ndarray
    in_flight: np.ndarray               # now
    latency_s: np.ndarray               # float per endpoint; NaN: unknown


@dataclasses.dataclass(frozen=True, eq=False)
class Report:
    client: str
    seq: int
    plan_age_s: float
    ok: np.ndarray                      # int64 per endpoint, cumulative
    over_slo: np.ndarray
    failed: np.ndarray
    keys: Tuple[KeyReport, ...]
    ejected: Tuple[int, ...]           # endpoint indexes, in the client's slots
    names: Tuple[Optional[str], ...] = ()   # the endpoint of each of the client's slots (None: vacant)
    abandoned: Optional[np.ndarray] = None  # int64 per endpoint, cumulative; None: the client sends none (zeros)


def build_report(router: Any, client: str, seq: int, fingerprint: str, plan_age_s: float,
                 base: Optional[Tuple[int, Snapshot]] = None) -> Tuple[bytes, Snapshot]:
    """The report of ``router`` (a ``tritonmix.request.Router``) as JSON bytes, sparse against ``base`` (the seq and
    snapshot of the last report the plane acknowledged) when given, and the snapshot of this one. O(dispatchers x n)."""
    names = tuple(router.endpoint_names())
    n = len(names)  # slots read later may have grown since: theirs are the first n (slots never move)
    vacant = router.vacant() if hasattr(router, "vacant") else ()
    slots = tuple(None if k < len(vacant) and vacant[k] else name for k, name in enumerate(names))
    counters = np.asarray(router.endpoint_counters(), dtype=np.int64).reshape(-1, 3).T[:, :n]
    arrivals = router.arrivals()
    dispatchers = router.dispatchers()
    view = getattr(router, "stall_view", None)
    if view is not None:
        # the stats and the cancelled attempts read together; dispatchers are only ever added, after those above
        stats, cancelled = view()
        abandoned = np.zeros(n, np.int64)
        got = np.asarray(cancelled[:n], np.int64)
        abandoned[: got.size] = got
        counters = np.vstack([counters, abandoned])
    else:
        stats = [d.stats() for d in dispatchers.values()]
    snap: Snapshot = {"ep": counters, "keys": {}, "names": slots}
    old = base[1] if base is not None and base[1].get("names") == slots else None  # slots changed: a whole one
    if old is not None and old["ep"].shape[0] != counters.shape[0]:
        old = None
    keys = []
    for (model, request_class), st in zip(dispatchers, stats):
        figures = (arrivals.get((model, request_class), 0), np.asarray(st.successes, np.int64)[:n],
                   np.asarray(st.failures, np.int64)[:n], np.asarray(st.in_flight, np.int64)[:n],
                   np.asarray(st.ewma_latency_s, float)[:n])
        snap["keys"][(model, request_class)] = figures
        before = old["keys"].get((model, request_class)) if old is not None else None
        item: Dict[str, Any] = {"model": model, "class": request_class, "arrivals": figures[0]}
        if before is None:
            idx = None
        else:
            changed = (figures[1] != before[1]) | (figures[2] != before[2]) | (figures[3] != before[3]) \
                | ~((figures[4] == before[4]) | (np.isnan(figures[4]) & np.isnan(before[4])))
            if not changed.any() and figures[0] == before[0]:
                continue
            idx = np.flatnonzero(changed)
            item["idx"] = idx.tolist()
        for name, values in zip(("successes", "failures", "in_flight"), figures[1:4]):
            item[name] = (values if idx is None else values[idx]).tolist()
        lat = figures[4] if idx is None else figures[4][idx]
        item["latency_s"] = [x if x == x else None for x in lat.tolist()]
        keys.append(item)
    fields = ("ok", "over_slo", "failed", "abandoned")[: counters.shape[0]]
    if old is None:
        endpoint: Dict[str, Any] = {name: row.tolist() for name, row in zip(fields, counters)}
    else:
        idx = np.flatnonzero((counters != old["ep"]).any(axis=0))
        endpoint = {"idx": idx.tolist(), **{name: row[idx].tolist() for name, row in zip(fields, counters)}}
    ejected = router.ejected_by_router()
    body: Dict[str, Any] = {"v": 1, "client": client, "fleet": fingerprint, "seq": seq,
                            "plan_age_s": plan_age_s if math.isfinite(plan_age_s) else -1.0,
                            "endpoint": endpoint, "keys": keys,
                            "ejected": [names[i] for i, out in enumerate(ejected[:n]) if out and slots[i] is not None]}
    if old is not None:
        body["base"] = base[0]  # type: ignore[index]
    else:
        body["names"] = list(slots)
    return json.dumps(body, separators=(",", ":")).encode(), snap


def parse_report(data: bytes, names: Sequence[str], fingerprint: str,
                 base_of: Optional[Callable[[str, int], Optional["Report"]]] = None) -> Report:
    """Check a report against the plane's fleet and return it whole (a sparse one filled in from its base, which
    ``base_of(client, seq)`` gives: None when the plane does not hold it -> StaleBase); ``ReportError`` names the
    first thing wrong (nothing is half-applied: the plane applies a report only after it parsed whole)."""
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"report is {len(data)} bytes; the limit is {MAX_REPORT_BYTES}")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"report is not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ReportError("report must be a JSON object")
    if raw.get("v") != 1:
        raise ReportError(f"report version {raw.get('v')!r} is not supported (expected 1)")
    client = raw.get("client")
    if not isinstance(client, str) or not 1 <= len(client) <= 128 or not client.isprintable():
        raise ReportError("report field 'client' must be 1-128 printable characters")
    if raw.get("fleet") != fingerprint:
        raise ReportError(f"report is for another fleet (fingerprint {str(raw.get('fleet'))[:32]!r}, this plane's "
                          f"is {fingerprint!r}: the endpoint names or their order differ, or for a discovering "
                          "fleet the Kubernetes namespace, fleet label, protocol or SLO)")
    seq = _count(raw.get("seq"), "seq")
    age = raw.get("plan_age_s", -1.0)
    if not isinstance(age, (int, float)) or isinstance(age, bool) or not math.isfinite(age):
        raise ReportError("report field 'plan_age_s' must be a finite number")
    base: Optional[Report] = None
    if "base" in raw:
        base_seq = _count(raw.get("base"), "base")
        base = base_of(client, base_seq) if base_of is not None else None
        if base is None:
            raise StaleBase(f"report is sparse against report {base_seq}, which this plane does not hold: send a "
                            "whole report")
    slots = _names(raw["names"]) if "names" in raw else (base.names if base is not None else tuple(names))
    n = len(slots)
    if base is not None and len(base.names) != n:
        raise ReportError("report field 'names': a sparse report's slots must be its base's")
    ep = raw.get("endpoint")
    if not isinstance(ep, Mapping):
        raise ReportError("report field 'endpoint' must be an object with 'ok', 'over_slo', 'failed'")
    idx = _idx(ep, n, "endpoint", base is not None)
    ok, over, failed = (_fill(None if base is None else getattr(base, attr), idx,
                              _counts(ep.get(k), n if idx is None else len(idx), f"endpoint.{k}"))
                        for k, attr in (("ok", "ok"), ("over_slo", "over_slo"), ("failed", "failed")))
    abandoned = None if base is None else base.abandoned
    if "abandoned" in ep:
        got = _counts(ep.get("abandoned"), n if idx is None else len(idx), "endpoint.abandoned")
        abandoned = _fill(np.zeros(n, np.int64) if abandoned is None else abandoned, idx, got)
    items = raw.get("keys")
    if not isinstance(items, list) or len(items) > MAX_KEYS:
        raise ReportError(f"report field 'keys' must be a list of at most {MAX_KEYS} objects")
    before = {(k.model, k.request_class): k for k in base.keys} if base is not None else {}
    keys: List[KeyReport] = []
    seen = set()
    for k, item in enumerate(items):
        keys.append(_key(item, n, f"keys[{k}]", before))
        key = (keys[-1].model, keys[-1].request_class)
        if key in seen:
            raise ReportError(f"report field 'keys[{k}]': {key[0]!r}/{key[1]} appears twice")
        seen.add(key)
    keys += [k for key, k in before.items() if key not in seen]  # left out of a sparse report: unchanged
    ejected_names = raw.get("ejected", [])
    if not isinstance(ejected_names, list):
        raise ReportError("report field 'ejected' must be a list of endpoint names")
    index = {name: i for i, name in enumerate(slots) if name is not None}
    unknown = [str(x)[:64] for x in ejected_names if x not in index]
    if unknown:
        raise ReportError(f"report field 'ejected' names unknown endpoint(s): {', '.join(unknown[:5])}")
    return Report(client, seq, float(age), ok, over, failed, tuple(keys),
                  tuple(sorted({index[x] for x in ejected_names})), slots, abandoned)


def _names(raw: Any) -> Tuple[Optional[str], ...]:
    """The report's ``names``: a list of endpoint names or nulls (vacant slots), the names distinct."""
    if not isinstance(raw, list) or len(raw) > MAX_SLOTS:
        raise ReportError(f"report field 'names' must be a list of at most {MAX_SLOTS} endpoint names or nulls")
    if any(x is not None and not (isinstance(x, str) and 1 <= len(x) <= 256 and x.isprintable()) for x in raw):
        raise ReportError("report field 'names' holds something that is not an endpoint name (1-256 printable "
                          "characters) or null")
    live = [x for x in raw if x is not None]
    if len(set(live)) != len(live):
        raise ReportError("report field 'names' names an endpoint twice")
    return tuple(raw)


def _key(item: Any, n: int, where: str, before: Mapping[Tuple[str, str], KeyReport]) -> KeyReport:
    if not isinstance(item, Mapping):
        raise ReportError(f"report field '{where}' must be an object")
    model, request_class = item.get("model"), item.get("class")
    if not isinstance(model, str) or not 1 <= len(model) <= 256:
        raise ReportError(f"report field '{where}.model' must be a model name (1-256 characters)")
    if request_class not in _CLASSES:
        raise ReportError(f"report field '{where}.class' must be one of {', '.join(_CLASSES)}")
    old = before.get((model, request_class))
    idx = _idx(item, n, where, old is not None)
    m = n if idx is None else len(idx)
    lat = _array(item.get("latency_s"), m, f"{where}.latency_s", "a list of {n} numbers or nulls", float)
    known = lat[~np.isnan(lat)]
    if not (np.isfinite(known).all() and (known >= 0).all()):
        raise ReportError(f"report field '{where}.latency_s' holds a negative or infinite latency")

    def whole(attr: str, values: np.ndarray) -> np.ndarray:
        return _fill(None if old is None else getattr(old, attr), idx, values)

    return KeyReport(model, request_class, _count(item.get("arrivals"), f"{where}.arrivals"),
                     whole("successes", _counts(item.get("successes"), m, f"{where}.successes")),
                     whole("failures", _counts(item.get("failures"), m, f"{where}.failures")),
                     whole("in_flight", _counts(item.get("in_flight"), m, f"{where}.in_flight")),
                     whole("latency_s", lat))


def _idx(item: Mapping[str, Any], n: int, where: str, sparse_ok: bool) -> Optional[np.ndarray]:
    """The endpoint indexes of a sparse part (None: a whole one); ReportError for bad or repeated indexes, or for
    indexes where no base holds the rest."""
    if "idx" not in item:
        return None
    if not sparse_ok:
        raise ReportError(f"report field '{where}.idx': a sparse part needs a base report that has it")
    raw = item.get("idx")
    idx = _counts(raw, len(raw) if isinstance(raw, list) else -1, f"{where}.idx")
    if idx.size and (idx.max() >= n or np.unique(idx).size != idx.size):
        raise ReportError(f"report field '{where}.idx' must hold distinct endpoint indexes below {n}")
    return idx


def _fill(base: Optional[np.ndarray], idx: Optional[np.ndarray], values: np.ndarray) -> np.ndarray:
    if idx is None:
        return values
    out = np.array(base, copy=True)
    out[idx] = values
    return out


def _count(x: Any, where: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise ReportError(f"report field '{where}' must be an integer >= 0, got {str(x)[:32]!r}")
    return x


def _counts(xs: Any, n: int, where: str) -> np.ndarray:
    a = _array(xs, n, where, "a list of {n} integers (one per endpoint)", np.int64)
    if n and a.min() < 0:
        raise ReportError(f"report field '{where}' holds a negative count")
    return a


def _array(xs: Any, n: int, where: str, what: str, dtype: Any) -> np.ndarray:
    """A list of ``n`` numbers as a numpy array (O(n) in C: a report of 256 endpoints parses in microseconds);
    integers must be integers (no floats, strings or nesting), floats may be null (NaN)."""
    if not isinstance(xs, list) or len(xs) != n:
        raise ReportError(f"report field '{where}' must be " + what.format(n=n))
    try:
        raw = np.asarray(xs) if dtype is np.int64 else np.asarray(xs, dtype=float)
    except (TypeError, ValueError):
        raise ReportError(f"report field '{where}' must be " + what.format(n=n)) from None
    if raw.shape != (n,) or (dtype is np.int64 and n and raw.dtype.kind not in "iub"):
        raise ReportError(f"report field '{where}' must be " + what.format(n=n))
    return raw.astype(dtype, copy=False)


def plan_message(plan_json: str, share: Optional[Mapping[str, float]], next_tick_s: float, interval_s: float,
                 replica: str, epoch: str, generation: int, endpoints_version: int = 0,
                 endpoints_json: Optional[str] = None) -> bytes:
    """The plane's answer to a sync or plan request: the plan (JSON text serialised once per tick, spliced in),
    this client's demand share per model, and when the next tick is due; the plan's generation and the plane's
    epoch are repeated last, so that a watcher can read them without parsing the plan. ``endpoints_version``: the
    version of the endpoint set the plan was made over; ``endpoints_json``: that set (``endpoints``), spliced in
    when the client does not hold it."""
    tail: Dict[str, Any] = {"share": dict(share or {}), "next_tick_s": round(next_tick_s, 4),
                            "interval_s": interval_s, "replica": replica, "epoch": epoch,
                            "endpoints_version": endpoints_version, "generation": generation}
    head = '{"plan":' + plan_json + ("" if endpoints_json is None else ',"endpoints":' + endpoints_json)
    return (head + "," + json.dumps(tail, separators=(",", ":"))[1:]).encode()


def http_call(url: str, *, method: str = "GET", body: Optional[bytes] = None,
              headers: Optional[Mapping[str, str]] = None, timeout_s: float = 1.0,
              ssl_context: Optional[ssl.SSLContext] = None) -> Tuple[int, bytes]:
    """One short HTTP request with the standard library (no connection reuse): (status, body)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ssl_context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
