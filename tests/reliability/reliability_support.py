"""Load, ledger and fault helpers of the reliability tests (tests/reliability/) and the soak (benches/test_soak.py).

``Load`` runs N concurrent callers (threads for the sync clients, tasks on one event loop for the aio clients)
against an emulated local fleet; every request is written to a ``Ledger`` exactly when it ends, so a test can check
that each request ended once (one result or one exception), none hung, and how long each took. ``FlappingProxy`` is
a TCP proxy on loopback that can go down (refuse new connections, reset the open ones) and up again in
milliseconds: a Triton server cannot restart once a second, a network path can.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonmix import Fleet

MODEL = "stable_diffusion"
UNAVAILABLE = {"http": "503", "grpc": "StatusCode.UNAVAILABLE"}
MODES = ("sync-http", "sync-grpc", "aio-http", "aio-grpc", "callback-grpc")

#: three emulated endpoints, 50 ms per request (0.5 s x time_scale 0.1), four in parallel each; equal prices and
#: CAPACITY mode so that every endpoint is meant to carry traffic (a fault on any of them is felt)
INTERVAL_S = 0.5
SLO_MS = 300.0
FLEET = {
    "slo_ms": SLO_MS,
    "mode": "capacity",
    "time_scale": 0.1,
    "controller": {"interval_s": INTERVAL_S},
    "endpoints": [
        {"name": f"e{k}", "accelerator": "neuron", "price_per_hour": 1.0,
         "profile": {"base": "inf2.xlarge", "latency_s": 0.5, "concurrency": 4}}
        for k in range(3)
    ],
}


def client_fleet(local: Any, protocol: str, urls: Optional[Dict[str, str]] = None, **controller: Any) -> Fleet:
    """The running local fleet as a client sees it over ``protocol`` (URLs replaced by ``urls`` where given)."""
    endpoints = []
    for name, ep in local.endpoints.items():
        url = (urls or {}).get(name) or (ep.grpc_url if protocol == "grpc" else ep.http_url)
        endpoints.append({"name": name, "url": url, "metrics_url": ep.metrics_url, "protocol": protocol,
                          "accelerator": ep.spec.accelerator, "price_per_hour": ep.spec.price_per_hour,
                          "max_concurrency": ep.profile.concurrency if ep.profile else None})
    settings = dict(FLEET["controller"], **controller)
    return Fleet.from_dict({"slo_ms": FLEET["slo_ms"], "mode": FLEET["mode"], "controller": settings,
                            "endpoints": endpoints})


def module_of(mode: str) -> Any:
    kind, protocol = mode.split("-")
    if protocol == "http":
        import tritonmix.http as sync_module
        import tritonmix.http.aio as aio_module
    else:
        import tritonmix.grpc as sync_module
        import tritonmix.grpc.aio as aio_module
    return aio_module if kind == "aio" else sync_module  # callback: the sync module's async_infer


def inputs(module: Any, k: int) -> list:
    prompt = module.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([f"request {k}".encode()], dtype=object))
    seed = module.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([k], dtype=np.int64))
    return [prompt, seed]


# ---- the ledger ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Entry:
    """One request: when it started and ended, and its result or exception (exactly one of them)."""

    key: Tuple[int, int]
    started_s: float
    ended_s: float = -1.0
    ok: bool = False
    error: Optional[BaseException] = None
    endings: int = 0

    @property
    def latency_s(self) -> float:
        return self.ended_s - self.started_s


class Ledger:
    """Every request started and how it ended; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: Dict[Tuple[int, int], Entry] = {}

    def start(self, key: Tuple[int, int]) -> None:
        with self._lock:
            assert key not in self.entries, f"request {key} started twice"
            self.entries[key] = Entry(key, time.monotonic())

    def end(self, key: Tuple[int, int], error: Optional[BaseException]) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self.entries[key]
            entry.endings += 1
            if entry.endings == 1:
                entry.ended_s, entry.ok, entry.error = now, error is None, error

    def between(self, t0: float, t1: float = float("inf")) -> List[Entry]:
        """Requests that started in [t0, t1)."""
        with self._lock:
            return [e for e in self.entries.values() if t0 <= e.started_s < t1]

    def all(self) -> List[Entry]:
        with self._lock:
            return list(self.entries.values())

    def check_each_ended_once(self) -> None:
        entries = self.all()
        unended = [e.key for e in entries if e.endings == 0]
        twice = [e.key for e in entries if e.endings > 1]
        assert not unended, f"{len(unended)} of {len(entries)} requests never ended (hung): {unended[:5]}"
        assert not twice, f"{len(twice)} requests ended more than once: {twice[:5]}"

    def failures(self, entries: Optional[List[Entry]] = None) -> List[Entry]:
        return [e for e in (self.all() if entries is None else entries) if e.endings and not e.ok]


# ---- the load --------------------------------------------------------------------------------------------------

class Load:
    """``callers`` concurrent callers, each sending one request at a time, paced to ``rate_per_caller`` req/s.

    Sync modes run one thread per caller sharing one client; ``callback-grpc`` does the same through gRPC's
    ``async_infer(callback=)``, each caller waiting for its callback; aio modes run one task per caller on an event
    loop in a thread of its own (the client is made on that loop). ``stop()`` ends the callers and waits for them; a
    caller that does not return within ``join_timeout_s`` is a hang and fails the test.
    """

    def __init__(self, mode: str, fleet: Fleet, *, callers: int = 32, rate_per_caller: float = 2.0,
                 deadline_s: Optional[float] = None, seed: int = 7, client_kwargs: Optional[dict] = None,
                 infer_kwargs: Optional[dict] = None) -> None:
        self.mode = mode
        self.kind, self.protocol = mode.split("-")
        self.module = module_of(mode)
        self.fleet = fleet
        self.callers = callers
        self.period_s = 1.0 / rate_per_caller if rate_per_caller > 0 else 0.0
        self.deadline_s = deadline_s
        self.seed = seed
        self.client_kwargs = dict(client_kwargs or {})
        self.infer_kwargs = dict(infer_kwargs or {})
        self.ledger = Ledger()
        self.client: Any = None
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ready = threading.Event()
        self._callers_done = threading.Event()
        self._closed = False
        self._failed_to_start: Optional[BaseException] = None

    # -- life cycle --
    def start(self) -> "Load":
        if self.kind in ("sync", "callback"):
            self.client = self.module.InferenceServerClient(fleet=self.fleet, seed=self.seed, **self.client_kwargs)
            self._threads = [threading.Thread(target=self._sync_caller, args=(c,), name=f"caller-{c}")
                             for c in range(self.callers)]
            for t in self._threads:
                t.start()
        else:
            self._threads = [threading.Thread(target=self._aio_main, name="aio-callers")]
            self._threads[0].start()
            assert self._ready.wait(30), "the aio client did not start"
            if self._failed_to_start is not None:
                raise self._failed_to_start
        return self

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.close_client()

    def stop(self, join_timeout_s: float = 30.0) -> Ledger:
        """End the callers and wait for them (the client stays open)."""
        self._stop.set()
        if self.kind == "aio":
            done = self._callers_done.wait(join_timeout_s)
            assert done, f"aio callers still running {join_timeout_s:.0f} s after stop"
            if self._closed:
                self._join_loop(join_timeout_s)
            return self.ledger
        deadline = time.monotonic() + join_timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self._threads if t.is_alive()]
        assert not hung, f"callers still running {join_timeout_s:.0f} s after stop: {hung[:5]}"
        return self.ledger

    def close_client(self, timeout_s: float = 30.0) -> None:
        """Close the client (for aio: on its loop, which then ends)."""
        if self.client is None or self._closed:
            return
        self._closed = True
        if self.kind in ("sync", "callback"):
            self.client.close()
            return
        loop = self._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(self.client.close(), loop).result(timeout_s)
        loop.call_soon_threadsafe(self._loop_done.set)
        if self._callers_done.is_set():
            self._join_loop(timeout_s)

    def _join_loop(self, timeout_s: float) -> None:
        self._threads[0].join(timeout_s)
        assert not self._threads[0].is_alive(), "the aio event loop did not end after close()"

    # -- helpers for tests --
    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``predicate`` until true; the seconds it took (AssertionError naming ``what`` on timeout)."""
        t0 = time.monotonic()
        while not predicate():
            assert time.monotonic() - t0 < timeout_s, f"{what}: not within {timeout_s:.1f} s"
            time.sleep(0.01)
        return time.monotonic() - t0

    def wait_requests(self, n: int, timeout_s: float = 30.0) -> None:
        self.wait_for(lambda: sum(1 for e in self.ledger.all() if e.endings) >= n, timeout_s, f"{n} requests done")

    # -- the callers --
    def _sync_caller(self, c: int) -> None:
        k = 0
        while not self._stop.is_set():
            started = time.monotonic()
            key = (c, k)
            self.ledger.start(key)
            if self.kind == "callback":
                self._callback_request(key, c * 100000 + k)
            else:
                error: Optional[BaseException] = None
                try:
                    self.client.infer(MODEL, inputs(self.module, c * 100000 + k), deadline_s=self.deadline_s,
                                      **self.infer_kwargs)
                except BaseException as exc:  # noqa: BLE001 - every ending is recorded
                    error = exc
                self.ledger.end(key, error)
            k += 1
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def _callback_request(self, key: Tuple[int, int], k: int, wait_s: float = 60.0) -> None:
        """gRPC's callback form: the callback records the ending (a second call would show in ``endings``)."""
        done = threading.Event()

        def callback(result: Any = None, error: Any = None) -> None:
            self.ledger.end(key, error)
            done.set()

        try:
            self.client.async_infer(MODEL, inputs(self.module, k), callback, deadline_s=self.deadline_s,
                                    **self.infer_kwargs)
        except BaseException as exc:  # noqa: BLE001 - a refused submission is this request's ending
            self.ledger.end(key, exc)
            return
        done.wait(wait_s)  # not called back in time: the ledger shows it as never ended

    def _aio_main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._loop_done = asyncio.Event()
            try:
                self.client = self.module.InferenceServerClient(fleet=self.fleet, seed=self.seed,
                                                                **self.client_kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._failed_to_start = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                await asyncio.gather(*(self._aio_caller(c) for c in range(self.callers)))
            finally:
                self._callers_done.set()
            await self._loop_done.wait()

        asyncio.run(main())

    async def _aio_caller(self, c: int) -> None:
        k = 0
        while not self._stop.is_set():
            started = time.monotonic()
            key = (c, k)
            self.ledger.start(key)
            error: Optional[BaseException] = None
            try:
                await self.client.infer(MODEL, inputs(self.module, c * 100000 + k), deadline_s=self.deadline_s,
                                        **self.infer_kwargs)
            except BaseException as exc:  # noqa: BLE001 - every ending is recorded
                error = exc
            self.ledger.end(key, error)
            k += 1
            await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - started)))


# ---- what the client counted ---------------------------------------------------------------------------------

def attempts(client: Any) -> Tuple[int, int, int]:
    """(user requests, attempts, attempts still in flight) over every dispatcher of the client."""
    requests = sum(client.router.arrivals().values())
    picks = in_flight = 0
    for d in client.router.dispatchers().values():
        s = d.stats()
        picks += sum(s.picks)
        in_flight += sum(s.in_flight)
    return requests, picks, in_flight


def assert_nothing_in_flight(client: Any) -> None:
    for key, d in client.router.dispatchers().items():
        s = d.stats()
        assert sum(s.in_flight) == 0, f"{key}: picks still in flight {s.in_flight}"
        assert sum(s.picks) == sum(s.successes) + sum(s.failures), f"{key}: unmatched picks {s}"


class BudgetCounter:
    """The retries the client's retry budget granted and refused since this counter was made (the budget's own
    counters, ``RetryBudget.granted`` / ``refused``)."""

    def __init__(self, client: Any) -> None:
        self._budget = client.router.budget
        self._granted0, self._refused0 = self._budget.granted, self._budget.refused

    @property
    def granted(self) -> int:
        return self._budget.granted - self._granted0

    @property
    def refused(self) -> int:
        return self._budget.refused - self._refused0


def served_by(client: Any, index: int) -> int:
    """Successful requests endpoint ``index`` served for this client so far."""
    return client.router.endpoint_counters()[index][0]


# ---- what this process holds ---------------------------------------------------------------------------------

def open_tcp_connections(ports: Set[int]) -> List[Tuple[str, int]]:
    """This process's TCP sockets connected to one of ``ports`` on loopback (any state but LISTEN/CLOSE)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            state, inode = fields[3], fields[9]
            if inode in inodes and remote_port in ports and state not in ("0A", "07"):
                found.append((fields[2], int(state, 16)))
    return found


# ---- a TCP proxy that flaps ----------------------------------------------------------------------------------

class FlappingProxy:
    """127.0.0.1:<port> -> target, on its own event loop thread, in one of three states:

        up       forwards both ways
        refuse   not listening (new connections refused); every open connection is reset (the process died)
        lossy    forwards requests, but resets the client's connection when the answer comes back: the server
                 ran the request and the client never hears of it (the path broke mid-request)
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"127.0.0.1:{self.port}"
        self.state = "refuse"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flapping-proxy", daemon=True)
        self._server: Optional[asyncio.AbstractServer] = None
        self._writers: Set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.resets = 0
        self.answers_dropped = 0
        #: HTTP/1.1 inference requests that went through to the server (``POST /v2/models/.../infer``)
        self.infer_requests = 0
        self._thread.start()
        self.set("up")

    def set(self, state: str) -> None:
        assert state in ("up", "refuse", "lossy"), state
        asyncio.run_coroutine_threadsafe(self._set(state), self._loop).result(10)

    async def _set(self, state: str) -> None:
        if state == "refuse":
            server, self._server = self._server, None
            if server is not None:
                server.close()
                await server.wait_closed()
            for writer in list(self._writers):
                self._reset(writer)
            self._writers.clear()
        elif self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.state = state

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()
        self.resets += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(writer)
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            tail = b""
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if not answers:  # count request lines, also one split across two reads
                        seen = tail + data
                        self.infer_requests += len(re.findall(rb"POST /v2/models/[^ ]*/infer ", seen))
                        tail = seen[-64:] if b"POST" in seen[-64:] else b""
                        tail = tail[tail.rfind(b"POST"):] if tail else b""
                    if answers and self.state == "lossy":
                        self.answers_dropped += 1
                        self._reset(writer)
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:  # one side ended: end the other (either way round)
                writer.transport.abort()
                up_writer.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    def close(self) -> None:
        self.set("refuse")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def is_unavailable(exc: BaseException, protocol: str) -> bool:
    return isinstance(exc, InferenceServerException) and exc.status() == UNAVAILABLE[protocol]


class LagMonitor:
    """How late this process's threads get to run: a thread that sleeps ``tick_s`` over and over and records each
    oversleep above ``floor_s`` as (when it woke, how late it was). A late wake-up is the machine (or the test
    process) not scheduling anyone, which the router cannot help; the slow-endpoint test reports it with its misses.
    """

    def __init__(self, tick_s: float = 0.005, floor_s: float = 0.05) -> None:
        self.tick_s, self.floor_s = tick_s, floor_s
        self.stalls: List[Tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)

    def __enter__(self) -> "LagMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            time.sleep(self.tick_s)
            now = time.monotonic()
            late = now - t0 - self.tick_s
            if late > self.floor_s:
                self.stalls.append((now, late))

    def worst_s(self, t0: float = float("-inf")) -> float:
        return max((late for at, late in self.stalls if at >= t0), default=0.0)
