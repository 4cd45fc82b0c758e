"""The load channel: every follower's interactive requests in flight per endpoint, summed by the plane and sent
back to all of them every few milliseconds, so that the followers of one plane share each endpoint's in-flight
limit (``Dispatcher.set_external``) the way one client's requests do.

Why: a limit only spills a queue's tail when whoever picks knows what is in flight at the endpoint. One client
knows its own; eight clients each holding a sliver of the limit do not, and a fleet whose endpoints have one slot
and a tight SLO then misses whenever two clients' requests meet (figures: ``benches/results/control-plane.md``).

UDP on the plane's port number (same host), one datagram per message, little-endian::

    tell (client -> plane)   b"TMXL" u8 version=2 u8 kind=1 u64 client u32 seq u32 set u16 n u16 k
                             k x (u8 len, model name, n x u16 in flight)            [16-byte HMAC-SHA256]
    load (plane -> clients)  b"TMXL" u8 version=2 u8 kind=2 u32 seq u32 set u16 n u16 k
                             k x (u8 len, model name, n x u16 in flight over every client)   [HMAC]

Figures are by PLANE slot (``endpoints``): a follower moves its own in-flight figures to the plane's slots by name
before it tells, and the sums back to its slots when they come. ``set`` is the version of the plane's endpoint set
the figures are over: the plane zeroes a told figure at a slot handed to another endpoint after that version (so a
left endpoint's requests never count for the newcomer in its slot), and a follower takes sums only of the set
version it holds (between a change and its next plan the channel is quiet for it: its limits go back to its demand
share, as when the channel is stale).

A follower tells when its figures change (at most every TELL_PERIOD_S) and at least every HEARTBEAT_S (the plane
counts the clients on the channel: while some reporting client is not, it plans as if limits did not hold); the plane sums the latest figure of each client heard from within EXPIRE_S, and sends the sums
to every such client at most every LOAD_PERIOD_S when they changed, and every HEARTBEAT_S regardless. A follower
sets others_i = total_i - (what it last told) on its interactive dispatchers; without a load message for STALE_S
it clears them and the plan's limits go back to its demand share (``follower.scale_limits``). With a token every
datagram carries HMAC-SHA256(token, payload)[:16] and one without a valid MAC is dropped (and counted).
Cost: O(models x n) per message; the plane's work grows with clients x message rate (a few thousand datagrams a
second for ten clients; a fleet of thousands of clients should widen LOAD_PERIOD_S or turn the channel off).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ["LoadHub", "LoadTeller", "Message", "encode", "decode", "decode_message", "TELL_PERIOD_S", "LOAD_PERIOD_S", "HEARTBEAT_S", "STALE_S", "EXPIRE_S"]

MAGIC = b"TMXL"
VERSION = 2
TELL, LOAD = 1, 2
MAC_BYTES = 16
#: a follower tells at most this often, the plane sends sums at most this often (s)
TELL_PERIOD_S = 0.004
LOAD_PERIOD_S = 0.004
#: and both at least this often
HEARTBEAT_S = 0.05
#: a follower without a load message this long clears the others' figures (s)
STALE_S = 0.15
#: the plane forgets a client silent this long (s)
EXPIRE_S = 0.3

_HEAD = struct.Struct("<4sBB")
_TELL = struct.Struct("<QIIHH")
_LOAD = struct.Struct("<IIHH")


class Message(NamedTuple):
    """One decoded datagram."""

    kind: int
    client: int
    seq: int
    set_version: int
    n: int
    figures: Dict[str, np.ndarray]


def _mac(token: Optional[bytes], payload: bytes) -> bytes:
    return hmac.new(token, payload, hashlib.sha256).digest()[:MAC_BYTES] if token else b""


def encode(kind: int, figures: Mapping[str, np.ndarray], n: int, seq: int, token: Optional[bytes],
           client: int = 0, set_version: int = 0) -> bytes:
    """One datagram (module docstring); ``figures``: model -> in flight per plane slot (clipped to 65535)."""
    parts = [_HEAD.pack(MAGIC, VERSION, kind)]
    version = set_version & 0xFFFFFFFF
    parts.append(_TELL.pack(client, seq & 0xFFFFFFFF, version, n, len(figures)) if kind == TELL
                 else _LOAD.pack(seq & 0xFFFFFFFF, version, n, len(figures)))
    for model, values in figures.items():
        name = model.encode()[:255]
        parts.append(bytes([len(name)]) + name)
        parts.append(np.clip(values, 0, 65535).astype("<u2").tobytes())
    payload = b"".join(parts)
    return payload + _mac(token, payload)


def decode(data: bytes, n: int, token: Optional[bytes]) -> Optional[Tuple[int, int, int, Dict[str, np.ndarray]]]:
    """(kind, client, seq, {model: in flight}) or None for a datagram that is not one of ours, is over another
    number of slots than ``n``, or fails its MAC."""
    msg = decode_message(data, token)
    if msg is None or msg.n != n:
        return None
    return msg.kind, msg.client, msg.seq, msg.figures


def decode_message(data: bytes, token: Optional[bytes]) -> Optional[Message]:
    """The datagram as a ``Message``, or None for one that is not ours or fails its MAC."""
    if token:
        if len(data) < MAC_BYTES or not hmac.compare_digest(_mac(token, data[:-MAC_BYTES]), data[-MAC_BYTES:]):
            return None
        data = data[:-MAC_BYTES]
    try:
        magic, version, kind = _HEAD.unpack_from(data, 0)
        if magic != MAGIC or version != VERSION or kind not in (TELL, LOAD):
            return None
        off = _HEAD.size
        if kind == TELL:
            client, seq, version, n, k = _TELL.unpack_from(data, off)
            off += _TELL.size
        else:
            seq, version, n, k = _LOAD.unpack_from(data, off)
            client, off = 0, off + _LOAD.size
        out: Dict[str, np.ndarray] = {}
        for _ in range(k):
            length = data[off]
            model = data[off + 1: off + 1 + length].decode()
            off += 1 + length
            values = np.frombuffer(data, "<u2", n, off).astype(np.int64)
            off += 2 * n
            out[model] = values
        return Message(kind, client, seq, version, n, out) if off == len(data) else None
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        return None


class LoadHub(asyncio.DatagramProtocol):
    """The plane's side: the latest figures per client, their sums, and the sends (module docstring). Runs on the
    plane's event loop; ``follow`` (on that loop too) takes the plane's set as it changes."""

    def __init__(self, n: int, token: Optional[str], clock: Any = time.monotonic) -> None:
        self.n = n
        self._token = token.encode() if token else None
        self._clock = clock
        self._clients: Dict[int, Tuple[Any, float, Dict[str, np.ndarray]]] = {}
        self._totals: Dict[str, np.ndarray] = {}
        self._transport: Any = None
        self._seq = 0
        self._dirty = False
        self._sent_at = 0.0
        self._timer: Any = None
        #: the plane's set version, and per slot the version at which its endpoint took it (``follow``)
        self.version = 1
        self._since: Tuple[int, ...] = (1,) * n
        #: datagrams taken, sent, and dropped (not ours, over more slots than the plane has, or a bad MAC)
        self.received = self.sent = self.dropped = 0

    def connection_made(self, transport: Any) -> None:
        self._transport = transport  # the timer starts with the first client's tell (``_wake``)

    def follow(self, version: int, since: Sequence[int]) -> None:
        """The plane's set is now ``version``, slot i taken at ``since[i]``: sums grow to the new slot count, and
        the figures told at a slot handed to another endpoint since are dropped."""
        n, old = len(since), self._since
        moved = [i for i in range(n) if i >= len(old) or since[i] != old[i]]
        self.version, self._since, self.n = version, tuple(since), n
        for _, _, figures in self._clients.values():
            for model, values in list(figures.items()):
                figures[model] = self._fit(values, moved)
        self._totals = {m: self._fit(v, moved) for m, v in self._totals.items()}
        self._dirty = True

    def _fit(self, values: np.ndarray, zero: Sequence[int]) -> np.ndarray:
        out = np.zeros(self.n, np.int64)
        k = min(self.n, values.size)
        out[:k] = values[:k]
        out[[i for i in zero if i < self.n]] = 0
        return out

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = decode_message(data, self._token)
        if msg is None or msg.kind != TELL or msg.n > self.n:
            self.dropped += 1
            return
        self.received += 1
        stale = [i for i in range(msg.n) if self._since[i] > msg.set_version]  # taken since the client's set
        figures = {model: self._fit(values, stale) for model, values in msg.figures.items()}
        old = self._clients.get(msg.client)
        if old is not None:
            self._subtract(old[2])
        for model, values in figures.items():
            total = self._totals.get(model)
            self._totals[model] = values.copy() if total is None else total + values
        self._clients[msg.client] = (addr, self._clock(), figures)
        self._dirty = True
        self._wake()

    def _wake(self) -> None:
        """Start the timer if it sleeps: it runs while some client is on the channel, and a plane without any
        (a gateway's, whose only client reports over HTTP) takes no wake-ups every LOAD_PERIOD_S."""
        if self._timer is None and self._transport is not None and not self._transport.is_closing():
            self._schedule()

    def _subtract(self, figures: Mapping[str, np.ndarray]) -> None:
        for model, values in figures.items():
            self._totals[model] = self._totals[model] - values

    def totals(self) -> Dict[str, List[int]]:
        return {m: v.tolist() for m, v in self._totals.items()}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _schedule(self) -> None:
        loop = asyncio.get_event_loop()
        self._timer = loop.call_later(LOAD_PERIOD_S, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        for client, (_, seen, figures) in list(self._clients.items()):
            if now - seen > EXPIRE_S:
                self._subtract(figures)
                del self._clients[client]
                self._dirty = True
        if self._clients and (self._dirty or now - self._sent_at >= HEARTBEAT_S):
            self._seq += 1
            data = encode(LOAD, self._totals, self.n, self._seq, self._token, set_version=self.version)
            for addr, _, _ in self._clients.values():
                try:
                    self._transport.sendto(data, addr)
                    self.sent += 1
                except OSError:
                    pass
            self._dirty, self._sent_at = False, now
        if self._clients and self._transport is not None and not self._transport.is_closing():
            self._schedule()
        else:
            self._timer = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()


class LoadTeller:
    """The follower's side, on its own thread: tells its interactive in-flight figures, moved to the plane's slots,
    to the replica it follows, and sets the others' figures on its router as sums come back (module docstring).
    ``set_map`` says which of its slots is which plane slot (the Follower, after each set it applies)."""

    def __init__(self, router: Any, token: Optional[str], client: int) -> None:
        import socket

        self.router = router
        self._token = token.encode() if token else None
        self._client = client
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._target: Optional[Tuple[str, int]] = None
        self._asked: Tuple[Optional[str], int] = (None, 0)
        self._told: Dict[str, np.ndarray] = {}
        self._told_at = 0.0
        self._seq = 0
        #: (set version, plane slot count, our slots, their plane slots); None: ours are the plane's, set version 1
        #: (a fixed list on both sides, until the Follower says otherwise)
        self._map: Optional[Tuple[int, int, np.ndarray, np.ndarray]] = None
        #: when the last load message landed (monotonic; -inf: never)
        self.heard_at = -float("inf")
        self._applied: set = set()

    @property
    def n(self) -> int:
        """The plane's slot count the figures are over."""
        return self._current()[1]

    def _current(self) -> Tuple[int, int, np.ndarray, np.ndarray]:
        m = self._map
        if m is not None:
            return m
        n = len(self.router.endpoint_names())
        ours = np.arange(n, dtype=np.intp)
        return 1, n, ours, ours

    def set_map(self, version: int, n_plane: int, ours: Sequence[int], theirs: Sequence[int]) -> None:
        """Our slot ``ours[k]`` is the plane's ``theirs[k]`` in the plane's set ``version`` of ``n_plane`` slots."""
        self._map = (version, n_plane, np.asarray(ours, np.intp), np.asarray(theirs, np.intp))

    def retarget(self, host: Optional[str], port: int = 0) -> None:
        """Tell ``host:port`` from now on (None: nobody; the others' figures are cleared). The name is resolved once
        per change of target, not per call."""
        import socket

        if (host, port) == self._asked:
            return
        self._asked = (host, port)
        target = None
        if host is not None:
            try:
                target = (socket.gethostbyname(host), port)
            except OSError:
                target = None
        if target != self._target:
            self._target = target
            self.clear()

    def own(self) -> Dict[str, np.ndarray]:
        """Our interactive in flight per model, by plane slot."""
        _, n, ours, theirs = self._current()
        out: Dict[str, np.ndarray] = {}
        for (model, request_class), d in self.router.dispatchers().items():
            if request_class == "interactive":
                mine = np.asarray(d.stats().in_flight, dtype=np.int64)
                values = np.zeros(n, np.int64)
                keep = ours < mine.size
                values[theirs[keep]] = mine[ours[keep]]
                out[model] = values
        return out

    def step(self, now: float) -> None:
        """Tell if the figures changed (or the heartbeat is due), then take every load message waiting."""
        m = self._current()
        if self._target is None:
            return
        figures = self.own()
        changed = (figures.keys() != self._told.keys()
                   or any(not np.array_equal(v, self._told[k]) for k, v in figures.items()))
        if changed or now - self._told_at >= HEARTBEAT_S:
            self._seq += 1
            try:
                self._sock.sendto(encode(TELL, figures, m[1], self._seq, self._token, self._client, m[0]),
                                  self._target)
                self._told, self._told_at = figures, now
            except OSError:
                pass
        while True:
            try:
                data, _ = self._sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            msg = decode_message(data, self._token)
            if msg is None or msg.kind != LOAD or msg.set_version != m[0] or msg.n != m[1]:
                continue
            self.heard_at = now
            self._apply(msg.figures)

    def _apply(self, totals: Mapping[str, np.ndarray]) -> None:
        _, _, ours, theirs = self._current()
        size = len(self.router.endpoint_names())
        for model, total in totals.items():
            told = self._told.get(model)
            others = np.maximum(total - told if told is not None and told.size == total.size else total, 0)
            mine = np.zeros(size, np.int64)
            keep = ours < size
            mine[ours[keep]] = others[theirs[keep]]
            try:
                self.router.dispatcher(model, "interactive").set_external(mine.tolist())
            except ValueError:
                continue
            self._applied.add(model)

    def clear(self) -> None:
        """Forget the others' figures (stale channel, another replica, fallback)."""
        size = len(self.router.endpoint_names())
        for model in list(self._applied):
            try:
                self.router.dispatcher(model, "interactive").set_external([0] * size)
            except ValueError:
                pass
        self._applied.clear()

    @property
    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self.clear()
        self._sock.close()
