"""Helpers for the drop-in client tests: three real Triton servers, inputs for ``add_sub``, and checks that every
pick was recorded. Imported by tests/test_clients_*.py."""
from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import numpy as np

from tritonmix.fleet import Fleet
from tritonmix.local import LocalTritonServer

REPO = Path(__file__).resolve().parent.parent / "model_repository" / "example"
FAST_EJECTION = {"eject_base_s": 0.3, "eject_max_s": 1.0}


class Trio:
    """Three LocalTritonServers of the example repository; a killed one restarts on the same ports."""

    def __init__(self) -> None:
        # the servers die with the thread that started them (PR_SET_PDEATHSIG): these threads live as long as the trio
        self._pool = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="trio")
        self.servers: List[LocalTritonServer] = list(self._pool.map(lambda _: _start(), range(3)))

    def urls(self, protocol: str) -> List[str]:
        return [s.http_url if protocol == "http" else s.grpc_url for s in self.servers]

    def fleet(self, protocol: str, **controller: Any) -> Fleet:
        settings = dict(FAST_EJECTION, **controller)
        return Fleet.from_urls(",".join(self.urls(protocol)), protocol=protocol, controller=settings)

    def kill(self, k: int) -> None:
        self.servers[k].kill()

    def restart(self, *ks: int) -> None:
        def again(k: int) -> LocalTritonServer:
            old = self.servers[k]
            return _start(http_port=old.ports["http"], grpc_port=old.ports["grpc"],
                          metrics_port=old.ports["metrics"])

        for k, server in zip(ks, self._pool.map(again, ks)):
            self.servers[k] = server

    def heal(self) -> None:
        """Restart any server a test left dead."""
        dead = [k for k, s in enumerate(self.servers) if not s.running]
        if dead:
            self.restart(*dead)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self._pool.shutdown()


def _start(**ports: Any) -> LocalTritonServer:
    return LocalTritonServer(REPO, ready_timeout_s=60.0, **ports).start()


def trio_fixture() -> Iterator[Trio]:
    trio = Trio()
    try:
        yield trio
    finally:
        trio.stop()


def add_sub_inputs(module: Any, a: np.ndarray, b: np.ndarray) -> list:
    in0 = module.InferInput("INPUT0", list(a.shape), "FP32")
    in0.set_data_from_numpy(a)
    in1 = module.InferInput("INPUT1", list(b.shape), "FP32")
    in1.set_data_from_numpy(b)
    return [in0, in1]


def sample(k: int) -> tuple:
    a = np.arange(6, dtype=np.float32).reshape(2, 3) + k
    b = np.full((2, 3), 0.5, dtype=np.float32)
    return a, b


def assert_nothing_in_flight(client: Any) -> None:
    for key, d in client.router.dispatchers().items():
        stats = d.stats()
        assert sum(stats.in_flight) == 0, f"{key}: picks still in flight {stats.in_flight}"
        assert sum(stats.picks) == sum(stats.successes) + sum(stats.failures), f"{key}: unmatched picks {stats}"


def picks(client: Any, model: str = "add_sub") -> tuple:
    return client.router.dispatchers()[(model, "interactive")].stats().picks


def hammer(call: Callable[[int], None], threads: int, duration_s: float, during: Callable[[], None],
           after_s: float) -> List[BaseException]:
    """Run ``call`` in ``threads`` loops for ``duration_s``; run ``during`` after ``after_s``; the errors."""
    errors: List[BaseException] = []
    stop = threading.Event()

    def loop(t: int) -> None:
        k = 0
        while not stop.is_set():
            try:
                call(t * 1000 + k)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
            k += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(after_s)
    during()
    time.sleep(max(0.0, duration_s - after_s))
    stop.set()
    for w in workers:
        w.join(30)
    return errors


def wait_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


#: two endpoints that are never reached: fake endpoint clients answer; readiness probes fail at once (unknown = ready)
UNREACHABLE = "127.0.0.1:9,127.0.0.1:10"


class FakeEndpoint:
    """tritonclient's sync infer and is_model_ready, for tests with no server: infer counts its calls, takes
    ``delay_s``, then raises ``error`` (an exception type or instance) when set, or answers."""

    def __init__(self, error: Any = None, delay_s: float = 0.0) -> None:
        self.error = error
        self.delay_s = delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def infer(self, model_name: str, inputs: Any, *args: Any) -> Any:
        with self.lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return ("result", model_name, inputs)

    def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def close(self) -> None:
        pass
