"""The controller's readiness probes: tri-state answers, TLS and headers, gRPC endpoints, and readmission of an
endpoint that was down as soon as a probe says it is ready again (not when its ejection backoff ends).

Servers here are tiny in-process HTTP(S) servers (``http.server``) and, for gRPC, one real local Triton server.
"""
from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tritonmix.controller import ProbeSettings
from tritonmix.controller.loop import Controller
from tritonmix.controller.probes import GrpcProber, http_ready
from tritonmix.controller.signals import HttpScraper, TritonSample
from tritonmix.controller.simulation import FakeClock
from tritonmix.fleet import Fleet
from tritonmix.local.server import free_port
from tritonmix.request import Router

TOKEN = "Bearer probe-t0ken-9d1e"


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /v2/health/ready answers ``server.status`` (401 without ``server.token`` when one is set)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server: Any = self.server
        server.seen_headers.append(dict(self.headers))
        status = server.status
        if server.token is not None and self.headers.get("Authorization") != server.token:
            status = 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Server:
    def __init__(self, status: int = 200, token: Optional[str] = None,
                 context: Optional[ssl.SSLContext] = None) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.status, self.httpd.token, self.httpd.seen_headers = status, token, []  # type: ignore[attr-defined]
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: List[_Server] = []

    def start(**kwargs: Any) -> _Server:
        servers.append(_Server(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=probe-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "1", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def _tls_server(serve: Any, certs: Dict[str, Path], **kwargs: Any) -> _Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["cert"], certs["key"])
    return serve(context=context, **kwargs)


# ---- answers ---------------------------------------------------------------------------------------------------

def test_http_probe_is_tri_state(serve: Any) -> None:
    assert http_ready(serve(status=200).url, 1.0) is True
    assert http_ready(serve(status=503).url, 1.0) is False
    assert http_ready(serve(status=200, token=TOKEN).url, 1.0) is None  # 401: up, readiness unknown
    assert http_ready(f"127.0.0.1:{free_port()}", 1.0) is False         # refused: down


def test_probe_headers_go_on_the_wire_and_the_tls_settings_are_the_clients(serve: Any, certs: Dict[str, Path]) -> None:
    server = _tls_server(serve, certs, token=TOKEN)
    with_ca = ProbeSettings.for_http(ssl=True, ssl_options={"ca_certs": str(certs["ca"])},
                                     headers={"Authorization": TOKEN})
    assert http_ready(server.url, 2.0, with_ca) is True
    # no headers: the proxy says 401, which is "up, unknown", never "not ready"
    assert http_ready(server.url, 2.0, ProbeSettings.for_http(ssl=True, ssl_options={"ca_certs": str(certs["ca"])})) is None
    # the plain http:// GET of before: a TLS port cannot answer it
    assert http_ready(server.url, 2.0) is False
    # the client's certificate check holds for the probe too (system CAs only: our CA is unknown)
    assert http_ready(server.url, 2.0, ProbeSettings.for_http(ssl=True, headers={"Authorization": TOKEN})) is False
    # insecure skips the host name check only; the aio client's ssl_context is taken as it is
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    assert http_ready(server.url, 2.0, ProbeSettings.for_http_aio(ssl=True, ssl_context=context,
                                                                  headers={"Authorization": TOKEN})) is True
    assert "Authorization" in server.httpd.seen_headers[0]  # type: ignore[attr-defined]
    assert TOKEN not in repr(with_ca)


def test_scraper_probes_tls_endpoints_of_a_fleet_and_hands_each_answer_over(serve: Any, certs: Dict[str, Path]) -> None:
    servers = [_tls_server(serve, certs, token=TOKEN), _tls_server(serve, certs, token=TOKEN, status=503)]
    fleet = Fleet.from_urls(",".join(s.url for s in servers), protocol="http")
    settings = ProbeSettings.for_http(ssl=True, ssl_options={"ca_certs": str(certs["ca"])},
                                      headers={"Authorization": TOKEN})
    scraper = HttpScraper.for_fleet(fleet, settings=settings, timeout_s=2.0)
    answers: List[Tuple[int, Optional[bool]]] = []
    scraper.set_readiness_listener(lambda i, ready, started_s: answers.append((i, ready)))
    try:
        scraper.poll(0.0)
        deadline = time.monotonic() + 5.0
        samples: List[Optional[TritonSample]] = [None, None]
        while time.monotonic() < deadline and any(s is None for s in samples):
            time.sleep(0.02)
            samples = list(scraper.poll(0.0))
        assert [s.ready for s in samples] == [True, False]  # type: ignore[union-attr]
        assert (0, True) in answers and (1, False) in answers
    finally:
        scraper.close()


def test_grpc_probe_of_a_closed_port_says_down() -> None:
    prober = GrpcProber(f"127.0.0.1:{free_port()}")
    try:
        assert prober.ready(1.0) is False
    finally:
        prober.close()


def test_grpc_probe_sees_a_server_that_just_came_up_at_once() -> None:
    """A probe channel that failed to connect would fail every call of its reconnect backoff (100-250 ms) at once,
    "down" of a server that is up: the prober drops it after an UNAVAILABLE answer, so the next probe connects."""
    from concurrent import futures

    import grpc
    from tritonclient.grpc import service_pb2

    url = f"127.0.0.1:{free_port()}"
    prober = GrpcProber(url)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    ready = grpc.unary_unary_rpc_method_handler(
        lambda request, context: service_pb2.ServerReadyResponse(ready=True),
        request_deserializer=service_pb2.ServerReadyRequest.FromString,
        response_serializer=service_pb2.ServerReadyResponse.SerializeToString)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ServerReady": ready})])
    try:
        for _ in range(3):  # down: its connection attempts fail, a kept channel's backoff would grow to 250 ms
            assert prober.ready(1.0) is False
        server.add_insecure_port(url)
        server.start()
        assert prober.ready(1.0) is True, "the probe said down in its channel's reconnect backoff"
        assert prober.ready(1.0) is True
    finally:
        prober.close()
        server.stop(0)


# ---- readmission -----------------------------------------------------------------------------------------------

class ProbedSource:
    """A live SignalSource: no readiness in the samples, answers handed over through the listener."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.listener: Any = None
        self.probed: List[List[int]] = []

    def set_readiness_listener(self, listener: Any) -> None:
        self.listener = listener

    def poll(self, now: float) -> List[Optional[TritonSample]]:
        return [None] * self.n

    def probe(self, indices: List[int]) -> None:
        self.probed.append(list(indices))

    def answer(self, i: int, ready: Optional[bool], started_s: float) -> None:
        self.listener(i, ready, started_s)

    def close(self) -> None:
        pass


def _fleet(protocol: str = "grpc", **controller: Any) -> Fleet:
    eps = [{"name": f"e{k}", "url": f"127.0.0.1:{9500 + k}", "accelerator": "neuron", "price_per_hour": 1.0,
            "max_rps": 50.0, "max_concurrency": 4, "protocol": protocol} for k in range(3)]
    return Fleet.from_dict({"endpoints": eps, "slo_ms": 300, "mode": "capacity",
                            "controller": {"interval_s": 0.5, **controller}})


def _controller(clock: FakeClock, **controller: Any) -> Tuple[Controller, Router, ProbedSource]:
    fleet = _fleet(**controller)
    router = Router(fleet, clock=clock)
    router.dispatcher("m", "interactive")
    source = ProbedSource(3)
    return Controller(fleet, router, source=source, clock=clock, jitter=0.0), router, source


def test_an_endpoint_ejected_while_down_is_readmitted_by_the_first_ready_probe() -> None:
    clock = FakeClock(100.0)
    ctl, router, source = _controller(clock)
    ctl.tick()
    ctl.report_failure(1, "connection failure", clock())        # the request path: refused, ejected (2 s backoff)
    assert router.ejected()[1] and ctl.watched() == [1]
    clock.advance(0.1)
    source.answer(1, False, clock())                           # down: the process is gone
    clock.advance(0.6)
    ctl.tick()
    assert ctl.plan.interactive_weights[1] == 0.0
    clock.advance(0.1)
    source.answer(1, True, clock() - 0.01)                     # restarted: ready again, 0.8 s into a 2 s backoff
    assert not router.ejected()[1], "a dead endpoint that came back waits out its backoff"
    assert ctl.tick_due_early, "the comeback does not bring the tick forward"
    clock.advance(0.1)
    assert ctl.tick().interactive_weights[1] > 0.0
    readmit = ctl.decisions("readmit")[-1]
    assert "ready again" in readmit.summary


def test_ready_probes_do_not_readmit_up_but_bad_endpoints() -> None:
    clock = FakeClock(100.0)
    ctl, router, source = _controller(clock, max_ejected_share=0.9)
    ctl.tick()
    ctl.report_failure(0, "consecutive failures", clock())       # failing while up: probes keep saying ready
    clock.advance(0.2)
    source.answer(0, True, clock())
    assert router.ejected()[0], "an endpoint never seen down was readmitted by a ready probe"
    source.answer(0, None, clock())                            # unknown (401, timeout): changes nothing
    assert ctl.health.ready[0] and router.ejected()[0]
    # a ready answer from a probe started before the endpoint was seen down does not count either
    early = clock()
    ctl.report_failure(2, "connection failure", clock())
    clock.advance(0.1)
    source.answer(2, False, clock())
    assert ctl.health.ready[2] is False
    source.answer(2, True, early + 0.05)                       # started before the "down" probe: stale
    assert router.ejected()[2] and ctl.health.ready[2] is False
    clock.advance(0.1)
    source.answer(2, True, clock())                            # started after it: back
    assert not router.ejected()[2] and ctl.health.ready[2]


def test_the_loop_probes_down_endpoints_between_ticks_and_readmits_within_two_intervals() -> None:
    """Real time, the controller's own thread: between ticks an ejected endpoint is probed every fifth of an
    interval; once an answer says ready, the next plan gives it weight well within two intervals."""
    fleet = _fleet(interval_s=0.2)
    router = Router(fleet)
    router.dispatcher("m", "interactive")
    source = ProbedSource(3)
    ctl = Controller(fleet, router, source=source)
    weights: List[Tuple[float, float]] = []
    ctl.add_listener(lambda snap: weights.append((time.monotonic(), ctl.plan.interactive_weights[1])))
    ctl.start()
    try:
        time.sleep(0.25)
        ctl.report_failure(1, "connection failure", time.monotonic())
        source.answer(1, False, time.monotonic())
        time.sleep(0.15)
        assert any(1 in p for p in source.probed), "nothing probed the ejected endpoint between ticks"
        ready_at = time.monotonic()
        source.answer(1, True, ready_at)
        deadline = ready_at + 2.0
        while time.monotonic() < deadline and not any(t > ready_at and w > 0.0 for t, w in weights):
            time.sleep(0.005)
        back = [t for t, w in weights if t > ready_at and w > 0.0]
        assert back and back[0] - ready_at < 2 * 0.2, f"weight back after {back[0] - ready_at if back else None} s"
    finally:
        ctl.stop()


def test_grpc_endpoints_are_probed_live_ready_then_down_then_ready() -> None:
    """A real Triton server over gRPC (nothing probed gRPC endpoints before: their readiness was always unknown)."""
    from clients_support import REPO
    from tritonmix.local import LocalTritonServer

    server = LocalTritonServer(REPO, ready_timeout_s=60.0).start()
    ports = {"http_port": int(server.http_url.rsplit(":", 1)[1]), "grpc_port": int(server.grpc_url.rsplit(":", 1)[1]),
             "metrics_port": int(server.metrics_url.rsplit(":", 1)[1])}
    fleet = Fleet.from_urls(server.grpc_url, protocol="grpc")
    scraper = HttpScraper.for_fleet(fleet, timeout_s=1.0)
    answers: List[Optional[bool]] = []
    scraper.set_readiness_listener(lambda i, ready, started_s: answers.append(ready))

    def answer_after(count: int) -> Optional[bool]:
        deadline = time.monotonic() + 10.0
        while len(answers) <= count and time.monotonic() < deadline:
            scraper.probe([0])
            time.sleep(0.05)
        return answers[-1]

    try:
        assert answer_after(0) is True
        server.kill()
        seen = len(answers)
        assert answer_after(seen) is False
        server = LocalTritonServer(REPO, ready_timeout_s=60.0, **ports).start()
        started = time.monotonic()
        while answers[-1] is not True and time.monotonic() < started + 5.0:
            answer_after(len(answers))
        assert answers[-1] is True, "the probe channel did not see the restarted server"
        assert time.monotonic() - started < 1.0, "the probe channel's reconnect backoff delayed the comeback"
    finally:
        scraper.close()
        server.stop()


def test_a_connection_failure_while_the_probes_say_ready_is_readmitted_after_a_short_growing_grace() -> None:
    """A restarted gRPC endpoint: the probe's channel sees it ready, the client's channel is still in its reconnect
    backoff and fails the first request (a connection failure, never sent): readmitted by a ready probe 0.25 s
    later, then 0.5 s, ..., not after the 4 s, 8 s backoff (nothing will ever see it down: it is up)."""
    from tritonmix.request.ejection import RECONNECT_GRACE_S

    clock = FakeClock(100.0)
    ctl, router, source = _controller(clock)
    ctl.tick()
    det = ctl.health.outliers
    det.ejections[1] = 1
    det._ended[1] = clock()                                   # a first ejection just ended: this one lasts 4 s
    ctl.report_failure(1, "connection failure", clock())
    assert router.ejected()[1] and det.until[1] - clock() == 4.0
    source.answer(1, True, clock() + 0.1)                     # too soon: the client may still be reconnecting
    assert router.ejected()[1]
    grace = RECONNECT_GRACE_S                                 # the 2nd ejection of the episode: 0.25 s
    clock.advance(grace)
    source.answer(1, True, clock())
    assert not router.ejected()[1], "a reachable endpoint waited out a 4 s backoff for its client's reconnect"
    # "consecutive failures" while up is an up-but-bad endpoint: no grace readmission
    ctl.report_failure(2, "consecutive failures", clock())
    clock.advance(1.0)
    source.answer(2, True, clock())
    assert router.ejected()[2]
