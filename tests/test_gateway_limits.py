"""The gateway's in-flight caps in a real Envoy (no plane, no Triton): three slow HTTP servers behind the gateway's
own xDS files, weights 980/10/10 so that least request alone would pile the requests onto the first. With a cap of 2
on it, the first never holds more than 2 and the rest go elsewhere, every request answered 200; with every endpoint
capped at 1, the excess queues uncapped in priority 1 instead of failing; without a cap the first holds more than 2
(so the cap, not the weights, is what the first checks see)."""
from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from tritonmix.gateway.config import NO_LIMIT, GatewaySettings, Upstream, bootstrap, limit_runtime
from tritonmix.gateway.envoy import EnvoyProcess
from tritonmix.gateway.xds import FileXds
from tritonmix.local.server import free_port

pytestmark = pytest.mark.timeout(90)

MODEL = "slow"
SERVICE_S = 0.15
CALLERS = 8


class _Servers:
    """Slow fake KServe endpoints: GET answers 200 (readiness), POST holds SERVICE_S; peak in flight per server."""

    def __init__(self, n: int) -> None:
        self.lock = threading.Lock()
        self.active = [0] * n
        self.peak = [0] * n
        self.served = [0] * n
        self.attempts = [0] * n
        self.stub_dead = [False] * n
        self.servers = [self._start(i) for i in range(n)]

    def _start(self, i: int) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(b"")

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.attempts[i] += 1
                error = b""
                if body != b"{}":
                    error = b'{"error": "failed to parse the request JSON buffer: Invalid value. at 0"}'
                elif owner.stub_dead[i]:
                    error = b'{"error": "Stub process \'slow_0_1\' is not healthy."}'
                if error:
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                with owner.lock:
                    owner.active[i] += 1
                    owner.peak[i] = max(owner.peak[i], owner.active[i])
                time.sleep(SERVICE_S)
                with owner.lock:
                    owner.active[i] -= 1
                    owner.served[i] += 1
                self._answer(b'{"outputs": []}')

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def reset(self) -> None:
        with self.lock:
            self.peak = [0] * len(self.peak)
            self.served = [0] * len(self.served)
            self.attempts = [0] * len(self.attempts)

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture(scope="module")
def envoy() -> Iterator[Tuple[EnvoyProcess, _Servers, str]]:
    servers = _Servers(3)
    ups = tuple(Upstream(f"e{i}", "127.0.0.1", s.server_address[1], 0) for i, s in enumerate(servers.servers))
    work = Path(tempfile.mkdtemp(prefix="tritonmix-limits-"))
    settings = GatewaySettings(http_port=free_port(), grpc_port=free_port(), health_interval_s=1.0)
    xds = FileXds(work / "xds", ups, [MODEL], settings)
    xds.initial()
    xds.apply_weights({None: (0.98, 0.01, 0.01), MODEL: (0.98, 0.01, 0.01)}, (True, True, True), "1")
    config = work / "bootstrap.json"
    config.write_text(json.dumps(bootstrap(settings, str(xds.folder), str(xds.cds_path), str(xds.rds_path),
                                           ups, [MODEL])))
    # one worker: Envoy's circuit breakers favour speed over exactness across workers, which can pass a limit by a
    # request; these tests check that our caps are set, not Envoy's exactness
    proc = EnvoyProcess(config, work, concurrency=1).start()
    time.sleep(1.5)  # the clusters load and the first health checks pass
    try:
        yield proc, servers, f"127.0.0.1:{settings.http_port}"
    finally:
        proc.stop()
        servers.close()


def _caps(proc: EnvoyProcess, caps: List[int]) -> None:
    values = {limit_runtime(MODEL, f"e{i}"): c or NO_LIMIT for i, c in enumerate(caps)}
    proc.admin("/runtime_modify?" + urllib.parse.urlencode(values), method="POST")


def _post(url: str, body: bytes) -> Tuple[int, bytes]:
    req = urllib.request.Request(f"http://{url}/v2/models/{MODEL}/infer", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _load(url: str, seconds: float) -> Dict[int, int]:
    statuses: Dict[int, int] = {}
    lock = threading.Lock()

    def caller() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, _ = _post(url, b"{}")
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_a_full_endpoint_spills_to_the_others(envoy: Tuple[EnvoyProcess, _Servers, str]) -> None:
    proc, servers, url = envoy
    _caps(proc, [2, 0, 0])
    servers.reset()
    statuses = _load(url, 1.5)
    assert set(statuses) == {200}, statuses
    assert servers.peak[0] == 2, servers.peak
    assert servers.served[1] + servers.served[2] > servers.served[0], servers.served


def test_every_endpoint_full_queues_instead_of_failing(envoy: Tuple[EnvoyProcess, _Servers, str]) -> None:
    proc, servers, url = envoy
    _caps(proc, [1, 1, 1])
    servers.reset()
    statuses = _load(url, 1.0)
    assert set(statuses) == {200}, statuses
    assert sum(servers.peak) > 3, servers.peak  # 8 callers on 3 slots of 1: the rest waited uncapped


def test_without_a_cap_the_weights_pile_onto_the_heavy_endpoint(envoy: Tuple[EnvoyProcess, _Servers, str]) -> None:
    proc, servers, url = envoy
    _caps(proc, [0, 0, 0])
    servers.reset()
    statuses = _load(url, 1.0)
    assert set(statuses) == {200}, statuses
    assert servers.peak[0] > 2, servers.peak


def test_a_dead_stub_is_retried_elsewhere_and_a_malformed_body_is_not(
        envoy: Tuple[EnvoyProcess, _Servers, str]) -> None:
    """Triton's python backend answers 500 "Stub process ... is not healthy" for what a dead stub held: nothing
    ran, so the request goes to another endpoint. A malformed body's 500 is the client's: answered once, as is."""
    proc, servers, url = envoy
    _caps(proc, [0, 0, 0])
    servers.reset()
    servers.stub_dead[0] = True
    try:
        answers = [_post(url, b"{}") for _ in range(10)]
    finally:
        servers.stub_dead[0] = False
    assert [status for status, _ in answers] == [200] * 10, answers
    assert servers.attempts[0] >= 5 and servers.served[0] == 0, (servers.attempts, servers.served)
    servers.reset()
    status, body = _post(url, b"not json")
    assert status == 500 and b"failed to parse" in body, (status, body)
    assert sum(servers.attempts) == 1, servers.attempts
