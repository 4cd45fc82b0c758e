"""FaultProxy: each mode does what its docstring says, against a local echo server and once against a real Triton."""
from __future__ import annotations

import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tritonmix.local import FaultProxy, LocalTritonServer


class EchoServer:
    """A TCP echo server on one thread; counts the bytes it received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="test-echo-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        conns: List[socket.socket] = []
        while True:
            for key, _ in selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    for conn in conns + [self.listener, self._wake_r]:
                        conn.close()
                    selector.close()
                    return
                if sock is self.listener:
                    conn, _ = self.listener.accept()
                    conns.append(conn)
                    selector.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        self.received += len(data)
                        sock.sendall(data)  # blocking: small chunks only
                except OSError:  # reset by the proxy (refuse mode) while reading or echoing: that connection ends
                    data = b""
                if not data:
                    selector.unregister(sock)
                    conns.remove(sock)
                    sock.close()

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._wake_w.close()


@pytest.fixture()
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy("127.0.0.1", echo.port).start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()


def _connect(proxy: FaultProxy, timeout_s: float = 2.0) -> socket.socket:
    host, port = proxy.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def _echoes(sock: socket.socket, payload: bytes = b"ping") -> bool:
    sock.sendall(payload)
    return _recv_exactly(sock, len(payload)) == payload


def _silent(sock: socket.socket, timeout_s: float = 0.5) -> bool:
    """True when a read times out: the connection is open and nothing comes."""
    sock.settimeout(timeout_s)
    try:
        sock.recv(1)
    except socket.timeout:
        return True
    return False


def test_pass_forwards_both_ways_byte_for_byte(proxy: FaultProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with _connect(proxy) as sock:
        assert _echoes(sock, b"hello")
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert _recv_exactly(sock, len(payload)) == payload
        sender.join()
    stats = proxy.stats()
    assert stats.connections_accepted == 1
    assert stats.bytes_client_to_server == stats.bytes_server_to_client == len(payload) + 5
    assert echo.received == len(payload) + 5
    assert stats.bytes_dropped == 0


def test_pass_passes_eof_on(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echoes(sock)
        sock.shutdown(socket.SHUT_WR)  # the echo server closes on EOF: its FIN comes back through the proxy
        assert sock.recv(1) == b""
    deadline = time.monotonic() + 2
    while proxy.stats().connections_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.stats().connections_open == 0


def test_delay_holds_each_direction_and_keeps_order(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echoes(sock)  # connected before the delay
        proxy.set_delay(0.15)
        started = time.monotonic()
        for i in range(5):
            sock.sendall(b"%d," % i)
            time.sleep(0.01)
        assert _recv_exactly(sock, 10) == b"0,1,2,3,4,"
        assert time.monotonic() - started >= 0.3  # 0.15 s each way
        proxy.set_delay(0)
        started = time.monotonic()
        assert _echoes(sock)
        assert time.monotonic() - started < 0.15
    assert proxy.delay_s == 0.0 and proxy.mode == "pass"


def test_blackhole_hangs_keeps_connections_open_and_pass_serves_new_ones(proxy: FaultProxy,
                                                                         echo: EchoServer) -> None:
    with _connect(proxy) as old:
        assert _echoes(old)
        proxy.set_mode("blackhole")
        received = echo.received
        old.sendall(b"lost")
        assert _silent(old)
        with _connect(proxy) as new:  # accepted, never forwarded
            new.sendall(b"lost too")
            assert _silent(new)
            assert proxy.stats().connections_open == 2
            assert echo.received == received
            old.sendall(b"still open")  # no reset: writes keep succeeding
            proxy.set_mode("pass")
            with _connect(proxy) as fresh:
                assert _echoes(fresh)
            assert _silent(old, 0.2) and _silent(new, 0.2)  # black-holed ones stay dead
    assert proxy.stats().bytes_dropped >= len(b"lost" b"lost too")


def test_refuse_resets_new_and_existing_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as old:
        assert _echoes(old)
        proxy.set_mode("refuse")
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            old.recv(1)
        try:
            new = _connect(proxy)
        except ConnectionResetError:
            pass  # the proxy's reset landed before connect() returned: refused all the same
        else:
            with new:
                try:
                    assert new.recv(1) == b""
                except ConnectionResetError:
                    pass
        assert time.monotonic() - started < 0.5
    assert proxy.stats().connections_reset == 2
    proxy.set_mode("pass")
    with _connect(proxy) as fresh:
        assert _echoes(fresh)


def test_half_open_stops_reading_and_forwarding(proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as old:
        assert _echoes(old)
        proxy.set_mode("half_open")
        received = echo.received
        old.sendall(b"ping")
        assert _silent(old)
        old.settimeout(0.5)
        with pytest.raises(socket.timeout):  # nobody reads: the buffers fill and the writes block
            for _ in range(1024):
                old.send(bytes(65536))
        with _connect(proxy) as new:  # accepted, never read
            new.sendall(b"ping")
            assert _silent(new)
        assert echo.received == received
        assert proxy.stats().bytes_dropped == 0  # not read at all, unlike blackhole
        proxy.set_mode("pass")
        with _connect(proxy) as fresh:
            assert _echoes(fresh)


def test_reset_connections_frees_dead_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as old:
        assert _echoes(old)
        proxy.set_mode("blackhole")
        proxy.set_mode("pass")
        assert proxy.reset_connections() == 1
        with pytest.raises(ConnectionResetError):
            old.recv(1)


def test_mode_changes_from_many_threads_while_traffic_flows(proxy: FaultProxy,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                with _connect(proxy, timeout_s=0.05) as sock:
                    sock.sendall(b"x" * 100)
                    sock.recv(100)
            except OSError:
                pass

    def flip(modes: tuple) -> None:
        for i in range(40):
            proxy.set_mode(modes[i % len(modes)])
            proxy.set_delay(0.001 * (i % 3))
            time.sleep(0.005)

    clients = [threading.Thread(target=traffic) for _ in range(2)]
    flippers = [threading.Thread(target=flip, args=(modes,)) for modes in
                (("pass", "blackhole"), ("refuse", "pass"), ("half_open", "pass", "blackhole"))]
    with caplog.at_level("ERROR"):
        for thread in clients + flippers:
            thread.start()
        for thread in flippers:
            thread.join()
        stop.set()
        for thread in clients:
            thread.join()
        proxy.set_mode("pass")
        proxy.set_delay(0)
        with _connect(proxy) as fresh:
            assert _echoes(fresh)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text  # no error on the loop
    stats = proxy.stats()
    assert stats.connections_accepted > stats.connections_open >= 0


def test_target_down_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as proxy:
        try:
            sock = _connect(proxy)
        except ConnectionResetError:
            pass  # the reset landed before connect() returned (a loaded machine): reset all the same
        else:
            with sock:
                try:
                    assert sock.recv(1) == b""
                except ConnectionResetError:
                    pass
        deadline = time.monotonic() + 2.0
        while proxy.stats().connections_reset < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats().connections_reset == 1


def test_stop_closes_everything_and_leaves_no_thread(echo: EchoServer) -> None:
    before = {t.name for t in threading.enumerate()}
    proxy = FaultProxy(f"localhost:{echo.port}")  # a name: resolved on asyncio's executor threads
    with proxy:
        assert {t.name for t in threading.enumerate()} - before
        with _connect(proxy) as live, _connect(proxy) as dead:
            assert _echoes(live) and _echoes(dead)
            proxy.set_mode("half_open")
            proxy.stop()
            assert live.recv(1) == b""  # closed, not reset
            proxy.stop()  # idempotent
    assert {t.name for t in threading.enumerate()} == before
    assert proxy.stats().connections_open == 0
    with pytest.raises(RuntimeError, match="stopped"):
        proxy.start()


@pytest.mark.parametrize("args, kwargs, match", [
    (("127.0.0.1",), {}, "not host:port"),
    (("127.0.0.1:http",), {}, "not a number"),
    (("127.0.0.1:70000",), {}, "not a port number"),
    (("", 8000), {}, "host"),
    (("127.0.0.1", 0), {}, "not a port number"),
    (("127.0.0.1:8000",), {"listen_port": -1}, "listen_port"),
])
def test_bad_construction_is_a_value_error_naming_it(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaultProxy(*args, **kwargs)


def test_bad_mode_and_delay_are_value_errors(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault proxy mode 'delay'.*set_delay"):
        proxy.set_mode("delay")
    for bad in (-0.1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="delay_s"):
            proxy.set_delay(bad)  # type: ignore[arg-type]
    assert proxy.mode == "pass" and proxy.delay_s == 0.0


def test_a_taken_listen_port_is_an_os_error_naming_it(echo: EchoServer) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{echo.port}"):
        FaultProxy("127.0.0.1", echo.port, listen_port=echo.port).start()


def test_real_triton_ready_in_pass_times_out_in_blackhole_and_recovers(example_repository: Path) -> None:
    server = LocalTritonServer(example_repository)
    http_proxy = grpc_proxy = None
    try:
        server.start()
        http_proxy = FaultProxy(server.http_url).start()
        grpc_proxy = FaultProxy(server.grpc_url).start()
        grpc = grpcclient.InferenceServerClient(grpc_proxy.address)
        assert grpc.is_server_ready()  # plain TCP: gRPC (HTTP/2) passes too
        grpc.close()
        client = httpclient.InferenceServerClient(url=http_proxy.address, network_timeout=1.0)
        assert client.is_server_ready()
        http_proxy.set_mode("blackhole")
        for hung in (client, httpclient.InferenceServerClient(url=http_proxy.address, network_timeout=1.0)):
            started = time.monotonic()  # the kept-alive connection, then a new one: both hang until the timeout
            with pytest.raises((socket.timeout, TimeoutError)):
                hung.is_server_ready()
            assert 0.9 < time.monotonic() - started < 2.0
            hung.close()
        http_proxy.set_mode("pass")
        fresh = httpclient.InferenceServerClient(url=http_proxy.address, network_timeout=1.0)
        assert fresh.is_server_ready()
        fresh.close()
    finally:
        for fault_proxy in (http_proxy, grpc_proxy):
            if fault_proxy is not None:
                fault_proxy.stop()
        server.stop()
