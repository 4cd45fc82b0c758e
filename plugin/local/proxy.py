"""A TCP proxy for tests that breaks the network path to one endpoint on demand: delay, black hole, refuse, half-open.

::

    with FaultProxy(server.http_url) as proxy:          # or FaultProxy("127.0.0.1", 8000)
        client = httpclient.InferenceServerClient(proxy.address, network_timeout=1.0)
        proxy.set_delay(0.2)            # every chunk 0.2 s late, each direction
        proxy.set_mode("blackhole")     # requests hang until the client's own timeout
        proxy.set_mode("pass")          # new connections work again
        proxy.stats()                   # ProxyStats: connections accepted / open, bytes each way

It is plain TCP: it knows nothing of HTTP or gRPC, so one proxy per port (HTTP, gRPC, metrics) that should break.

Modes (``set_mode``; the change is in force when the call returns):

- ``pass`` (default): every byte is forwarded in both directions, in order, and an EOF (FIN) is passed on after the
  bytes before it. A reset (RST) from one side resets the other. The upstream connection is opened when a client
  connects; a target that does not answer (refused, or no connection within ``connect_timeout_s``) resets the client.
- ``blackhole``: a dropped network path. New connections are accepted and never reach the target. Existing ones stay
  open but forward nothing: bytes from either side are read and discarded, EOFs are swallowed, and the proxy never
  closes the client's connection. A client's requests hang until its own timeouts.
  Limit: the proxy's kernel still ACKs what the client sends, so a client's writes keep succeeding, where on a real
  dropped path a large write stalls once the send window is full.
- ``refuse``: new connections are reset as soon as they are accepted (``SO_LINGER`` 0, then close: an RST) and every
  existing connection is reset, upstream side too. The client's ``connect()`` succeeds (the kernel completes the
  handshake before the proxy sees the connection); its first read or write fails with ECONNRESET (or EOF).
- ``half_open``: a peer that vanished without FIN or RST (a host that lost power). Existing connections stop
  forwarding and the proxy stops reading from both of their sides; new connections are accepted and never read nor
  forwarded. What the client sends fills the proxy's receive buffer and then the client's send buffer, after which its
  writes block (or time out); nothing ever comes back and its connection never closes.
  Limit: a real vanished peer also stops ACKing, so the client's kernel retransmits and, after ``tcp_retries2``
  (about 15 minutes), gives up with ETIMEDOUT; a user-space proxy cannot withhold ACKs (its kernel sends them), so
  here the client sees a zero receive window instead and its TCP connection never times out by itself. Keepalive
  probes are answered too, so ``SO_KEEPALIVE`` does not detect it either; only the client's own timeouts do.

``set_delay(seconds)`` holds every chunk read in pass mode for that long before writing it on (each direction, so a
request-response round trip takes at least twice the delay); chunks keep their order, and a later chunk never
overtakes an earlier one when the delay shrinks. The delay is a separate setting: ``set_mode`` leaves it as it is,
``set_delay(0)`` removes it. Delayed bytes wait in memory, without a bound.

Back to ``pass`` (from any mode): new connections work again. A connection that was black-holed or half-open stays
dead, since its byte stream has a gap and forwarding again could only corrupt it: it forwards nothing until the
client resets it (its FIN is swallowed like its bytes), ``reset_connections()`` resets it, or ``stop()``; a
half-open one is not read, so even the client's reset goes unseen. Its target side stays open, and the target
closing it changes nothing for the client. ``stats().connections_open`` counts dead connections. (A real path that
comes back retransmits what was lost; a real rebooted peer answers RST, which ``reset_connections()`` emulates.)

Cost: one thread per proxy (an asyncio event loop), none per connection; two sockets per connection (client side,
target side). Pass mode with no delay writes each chunk as soon as it is read (``TCP_NODELAY`` on both sockets), with
the usual flow control: a side whose writes back up stops the other side's reads. ``stop()`` closes every socket and
joins the thread; it is idempotent, and a stopped proxy does not start again.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import math
import socket
import struct
import threading
from typing import Callable, Deque, Dict, Optional, Set, Tuple, TypeVar, Union

from ..errors import ConfigError

__all__ = ["MODES", "FaultProxy", "ProxyStats"]

logger = logging.getLogger(__name__)

MODES = ("pass", "blackhole", "refuse", "half_open")
_LIVE, _BLACKHOLED, _HALF_OPEN, _CLOSED = "live", "blackholed", "half_open", "closed"
_OTHER = {"client": "server", "server": "client"}
_NAMES = itertools.count(1)
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class ProxyStats:
    """Counters since start. ``connections_open``: client connections not closed yet (dead ones included)."""

    connections_accepted: int = 0
    connections_open: int = 0
    connections_reset: int = 0  # new ones refused plus existing ones reset (refuse, reset_connections, target down)
    bytes_client_to_server: int = 0  # written to the target
    bytes_server_to_client: int = 0  # written to the client
    bytes_dropped: int = 0  # read in blackhole or half-open and discarded


def _parse_target(target: str, port: Optional[int]) -> Tuple[str, int]:
    if port is None:
        if not isinstance(target, str) or ":" not in target:
            raise ConfigError(f"fault proxy target {target!r} is not host:port")
        target, _, port_text = target.rpartition(":")
        target = target[1:-1] if target.startswith("[") and target.endswith("]") else target
        if not port_text.isdigit():
            raise ConfigError(f"fault proxy target port {port_text!r} is not a number (target is host:port)")
        port = int(port_text)
    if not isinstance(target, str) or not target:
        raise ConfigError(f"fault proxy target host {target!r} is empty or not a string")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"fault proxy target port {port!r} is not a port number (1-65535)")
    return target, port


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _reset(transport: Optional[asyncio.Transport]) -> None:
    """Close with an RST: ``SO_LINGER`` on with a zero timeout makes close() discard the buffers and reset."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Pipe:
    """One direction of a connection: chunks in arrival order, each written at its due time (read time + delay).

    Rule: the head of the queue is written first, so order holds whatever the delays; an EOF follows the last chunk.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: Callable[[int], None],
                 eof_sent: Callable[[], None]) -> None:
        self.loop = loop
        self.dest: Optional[asyncio.Transport] = None
        self.chunks: Deque[Tuple[float, bytes]] = collections.deque()
        self.eof = False  # the source sent EOF
        self.eof_sent = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._count = count
        self._eof_sent = eof_sent

    def push(self, data: bytes, delay_s: float) -> None:
        self.chunks.append((self.loop.time() + delay_s, data))
        if self._timer is None:
            self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if self.dest is None or self._timer is not None:
            return
        now = self.loop.time()
        while self.chunks and self.chunks[0][0] <= now:
            data = self.chunks.popleft()[1]
            self.dest.write(data)
            self._count(len(data))
        if self.chunks:
            self._timer = self.loop.call_at(self.chunks[0][0], self._on_timer)
        elif self.eof and not self.eof_sent:
            self.eof_sent = True
            if self.dest.can_write_eof():
                self.dest.write_eof()
            self._eof_sent()

    def drop(self) -> None:
        self.chunks.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Side(asyncio.Protocol):
    """The protocol of one socket of a pair; it hands every event to the pair, naming its side."""

    def __init__(self, pair: "_Pair", side: str) -> None:
        self.pair = pair
        self.side = side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _set_nodelay(transport)
        self.pair.made(self.side, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.pair.received(self.side, data)

    def eof_received(self) -> bool:
        self.pair.eof(self.side)
        return True  # keep the socket open: the other direction may still carry data

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.pair.lost(self.side, exc)

    def pause_writing(self) -> None:
        self.pair.blocked[_OTHER[self.side]] = True
        self.pair.update_reading()

    def resume_writing(self) -> None:
        self.pair.blocked[_OTHER[self.side]] = False
        self.pair.update_reading()


class _Pair:
    """A client connection and, while it is live, its connection to the target. Runs on the proxy's loop only."""

    def __init__(self, hub: "_Hub", loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.state = _LIVE
        self.transports: Dict[str, Optional[asyncio.Transport]] = {"client": None, "server": None}
        self.sides = {side: _Side(self, side) for side in ("client", "server")}
        self.pipes = {"client": _Pipe(loop, hub.counter("bytes_client_to_server"), self.eof_sent),
                      "server": _Pipe(loop, hub.counter("bytes_server_to_client"), self.eof_sent)}
        self.blocked = {"client": False, "server": False}  # this side's reads wait for the other side's writes
        self.eof_seen = {"client": False, "server": False}
        self.connecting: Optional[asyncio.Task] = None

    def made(self, side: str, transport: asyncio.Transport) -> None:
        self.transports[side] = transport
        self.pipes[_OTHER[side]].dest = transport
        if side == "client":
            self.hub.accepted(self)
        elif self.state != _LIVE:
            transport.close()  # the client's connection died while this one was being opened
        self.update_reading()

    def received(self, side: str, data: bytes) -> None:
        if self.state == _LIVE:
            self.pipes[side].push(data, self.hub.delay_s)
        else:
            self.hub.counts["bytes_dropped"] += len(data)

    def eof(self, side: str) -> None:
        self.eof_seen[side] = True
        if self.state != _LIVE:
            return  # swallowed: a dead path carries no FIN either
        self.pipes[side].eof = True
        self.pipes[side].flush()

    def eof_sent(self) -> None:
        if self.pipes["client"].eof_sent and self.pipes["server"].eof_sent:
            self.close()  # both directions ended: close both sockets once their buffers are written

    def lost(self, side: str, exc: Optional[Exception]) -> None:
        """A socket closed. The client's going ends the pair; the target's ends it only while it is live (a dead
        pair keeps the client's connection open whatever the target does)."""
        self.transports[side] = None
        if side == "server" and self.state != _LIVE:
            return
        other = self.transports[_OTHER[side]]
        live = self.state == _LIVE
        self.state = _CLOSED
        self.drop()
        if self.connecting is not None:
            self.connecting.cancel()
        if other is not None and live and exc is not None:
            _reset(other)  # a reset is passed on as a reset
        elif other is not None:
            other.close()  # writes what is buffered, then FIN
        if side == "client":
            self.hub.pairs.discard(self)

    def update_reading(self) -> None:
        for side, transport in self.transports.items():
            if transport is None or transport.is_closing() or self.eof_seen[side]:
                continue
            if self.state == _BLACKHOLED:
                want = True
            elif self.state == _LIVE:
                want = not self.blocked[side] and self.transports["server"] is not None
            else:
                want = False
            if want and not transport.is_reading():
                transport.resume_reading()
            elif not want and transport.is_reading():
                transport.pause_reading()

    def kill(self, state: str) -> None:
        """Stop forwarding for good: ``_BLACKHOLED`` reads and discards, ``_HALF_OPEN`` reads nothing."""
        if self.state != _LIVE:
            return
        self.state = state
        self.drop()
        self.update_reading()

    def drop(self) -> None:
        for pipe in self.pipes.values():
            pipe.drop()

    def reset(self, rst: bool = True) -> None:
        """Close both sockets at once, with an RST unless ``rst`` is false (then a FIN, buffers discarded)."""
        self.state = _CLOSED
        self.drop()
        if self.connecting is not None:
            self.connecting.cancel()
        for transport in list(self.transports.values()):
            if rst:
                _reset(transport)
            elif transport is not None:
                transport.abort()

    def close(self) -> None:
        for transport in list(self.transports.values()):
            if transport is not None:
                transport.close()


class _Hub:
    """What the proxy's connections share: mode, delay, counters, the open pairs. Used on the loop's thread only."""

    def __init__(self, target_host: str, target_port: int, connect_timeout_s: float) -> None:
        self.target = (target_host, target_port)
        self.connect_timeout_s = connect_timeout_s
        self.mode = "pass"
        self.delay_s = 0.0
        self.counts = {f.name: 0 for f in dataclasses.fields(ProxyStats) if f.name != "connections_open"}
        self.pairs: Set[_Pair] = set()

    def client_protocol(self) -> asyncio.Protocol:
        return _Pair(self, asyncio.get_running_loop()).sides["client"]

    def counter(self, name: str) -> Callable[[int], None]:
        def add(n: int) -> None:
            self.counts[name] += n
        return add

    def stats(self) -> ProxyStats:
        return ProxyStats(connections_open=len(self.pairs), **self.counts)

    def accepted(self, pair: _Pair) -> None:
        self.counts["connections_accepted"] += 1
        if self.mode == "refuse":
            self.counts["connections_reset"] += 1
            pair.reset()
            return
        self.pairs.add(pair)
        if self.mode == "blackhole":
            pair.state = _BLACKHOLED
        elif self.mode == "half_open":
            pair.state = _HALF_OPEN
        else:
            pair.connecting = asyncio.get_running_loop().create_task(self._connect(pair))

    async def _connect(self, pair: _Pair) -> None:
        """Open the pair's target side; a target that refuses or does not answer in time resets the client."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: pair.sides["server"], *self.target),
                                   self.connect_timeout_s)
        except asyncio.CancelledError:
            return  # the client went first
        except (OSError, asyncio.TimeoutError) as exc:
            if pair.state == _LIVE:
                logger.debug("fault proxy: target %s:%s unreachable (%s): client reset", *self.target, exc)
                self.counts["connections_reset"] += 1
                pair.reset()
        finally:
            pair.connecting = None

    def set_mode(self, mode: str) -> None:
        """New connections follow the mode from now on; live ones die (refuse: reset), dead ones stay dead."""
        self.mode = mode
        for pair in list(self.pairs):
            if mode == "refuse":
                self.counts["connections_reset"] += 1
                pair.reset()
            elif mode == "blackhole":
                pair.kill(_BLACKHOLED)
            elif mode == "half_open":
                pair.kill(_HALF_OPEN)

    def reset_all(self, rst: bool = True) -> int:
        pairs = list(self.pairs)
        for pair in pairs:
            pair.reset(rst)
        if rst:
            self.counts["connections_reset"] += len(pairs)
        return len(pairs)


class FaultProxy:
    """A TCP proxy in front of ``target`` (``"host:port"``, or a host and ``target_port``) with switchable faults.

    Bad input raises ``ConfigError`` (a ``ValueError``) naming what is wrong. Every method is thread-safe.
    """

    def __init__(self, target: str, target_port: Optional[int] = None, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, connect_timeout_s: float = 5.0) -> None:
        self.target_host, self.target_port = _parse_target(target, target_port)
        if isinstance(listen_port, bool) or not isinstance(listen_port, int) or not 0 <= listen_port < 65536:
            raise ConfigError(f"fault proxy listen_port {listen_port!r} is not a port number (0-65535, 0 = any)")
        self.listen_host = listen_host
        self.listen_port = listen_port
        self._hub = _Hub(self.target_host, self.target_port, _check_seconds("connect_timeout_s", connect_timeout_s))
        self._lock = threading.Lock()  # start, stop and every hand-over to the loop
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._stopped = False

    # -- addresses and settings --------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return f"{self.target_host}:{self.target_port}"

    @property
    def address(self) -> str:
        """``host:port`` to give clients instead of the target's; the port is known once started."""
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def mode(self) -> str:
        return self._hub.mode

    @property
    def delay_s(self) -> float:
        return self._hub.delay_s

    def __repr__(self) -> str:
        return f"FaultProxy({self.address} -> {self.target}, mode={self.mode}, delay_s={self.delay_s})"

    def set_mode(self, mode: str) -> None:
        """Switch to ``pass``, ``blackhole``, ``refuse`` or ``half_open`` (module docstring); in force on return."""
        if mode not in MODES:
            hint = "; a delay is set with set_delay(seconds)" if mode == "delay" else ""
            raise ConfigError(f"unknown fault proxy mode {mode!r} (one of {', '.join(MODES)}){hint}")
        self._call(lambda: self._hub.set_mode(mode))
        logger.info("fault proxy %s -> %s: mode %s", self.address, self.target, mode)

    def set_delay(self, delay_s: float) -> None:
        """Hold every chunk read from now on for ``delay_s`` seconds before writing it on (0: none)."""
        delay_s = _check_seconds("delay_s", delay_s)
        self._call(lambda: setattr(self._hub, "delay_s", delay_s))
        logger.info("fault proxy %s -> %s: delay %.3f s", self.address, self.target, delay_s)

    def reset_connections(self) -> int:
        """Reset (RST) every open connection, dead or live; the number reset. The mode stays as it is."""
        return self._call(self._hub.reset_all)

    def stats(self) -> ProxyStats:
        return self._call(self._hub.stats)

    # -- life cycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> "FaultProxy":
        """Listen and serve from a background thread; an error binding the port is raised here."""
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self!r} was stopped; make a new FaultProxy")
            if self._thread is not None:
                return self
            loop = asyncio.new_event_loop()
            ready: "concurrent.futures.Future[None]" = concurrent.futures.Future()
            thread = threading.Thread(target=self._run, args=(loop, ready), daemon=True,
                                      name=f"tritonmix-fault-proxy-{next(_NAMES)}")
            thread.start()
            try:
                ready.result(timeout=30)
            except BaseException:
                thread.join(timeout=5)
                raise
            self._loop, self._thread = loop, thread
        logger.info("fault proxy %s -> %s started", self.address, self.target)
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, join the thread. Idempotent.

        A connection is closed with a FIN, or an RST where bytes it sent are still unread (the kernel's rule: a
        half-open one, say)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._loop = None
        logger.info("fault proxy %s -> %s stopped", self.address, self.target)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: "concurrent.futures.Future[None]") -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._hub.client_protocol, self.listen_host, self.listen_port))
            except OSError as exc:
                ready.set_exception(OSError(exc.errno, f"fault proxy cannot listen on "
                                                       f"{self.listen_host}:{self.listen_port}: {exc.strerror}"))
                return
            except BaseException as exc:  # handed to start()
                ready.set_exception(exc)
                return
            self.listen_port = int(self._server.sockets[0].getsockname()[1])
            ready.set_result(None)
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._hub.reset_all(rst=False)
        for _ in range(3):  # let connection_lost and the cancelled connects run
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.get_running_loop().shutdown_default_executor()  # resolving a host name starts its threads

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the loop's thread and return its result; directly when no loop runs."""
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            loop = self._loop
            if loop is None or self._stopped:
                return fn()
            done: "concurrent.futures.Future[_T]" = concurrent.futures.Future()

            def run() -> None:
                try:
                    done.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    done.set_exception(exc)

            loop.call_soon_threadsafe(run)
            return done.result(timeout=30)


def _check_seconds(name: str, value: Union[int, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"fault proxy {name} {value!r} is not a finite number of seconds >= 0")
    return float(value)
