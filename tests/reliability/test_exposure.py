"""Exposure: what tritonmix starts listens on loopback only; TLS settings and headers reach every endpoint; credentials
never reach a log or the decision log.

TLS endpoints on loopback, made here with a throwaway CA (``openssl``):
    gRPC   two Triton servers with their own ``--grpc-use-ssl`` / ``--grpc-server-cert`` / ``--grpc-server-key`` /
           ``--grpc-root-cert`` flags
    HTTP   one nginx (``make test`` installs nginx-light when missing) terminating TLS on two ports in front of those
           servers' HTTP ports, answering 401 unless the request carries ``Authorization: Bearer <token>``
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl as ssl_module
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
import tritonmix.grpc.aio
import tritonmix.http
import tritonmix.http.aio
from clients_support import REPO, add_sub_inputs, assert_nothing_in_flight, sample
from tritonmix import Fleet
from tritonmix.local import LocalTritonServer
from tritonmix.local.server import free_port

pytestmark = pytest.mark.timeout(180)

TOKEN = "Bearer s3cret-7f1c0d2e-token"
SECRET = "s3cret-7f1c0d2e"


# ---- what listens where ---------------------------------------------------------------------------------------

def _listening(pid: int) -> List[str]:
    """host:port of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes: Set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            text = os.readlink(fd)
        except OSError:
            continue
        if text.startswith("socket:["):
            inodes.add(text[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                found.append(f"{_address(address, width)}:{int(port, 16)}")
    return found


def _address(hex_address: str, width: int) -> str:
    """/proc/net/tcp{,6} addresses (32-bit words in host order) -> dotted IPv4; IPv4-mapped IPv6 as IPv4."""
    raw = b"".join(bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8))
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return "[" + socket.inet_ntop(socket.AF_INET6, raw) + "]"


def _loopback(address: str) -> bool:
    return address.startswith("127.0.0.1:") or address.startswith("[::1]:")


def _children(pid: int) -> List[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_local_triton_server_listens_on_loopback_only() -> None:
    with LocalTritonServer(REPO, ready_timeout_s=60.0) as server:
        assert server.pid is not None
        ports = {server.ports[k] for k in ("http", "grpc", "metrics")}
        # ready (HTTP) can come a moment before the last of its listeners opens: look until all three are open
        deadline = time.monotonic() + 10.0
        while True:
            pids = [server.pid] + _children(server.pid)
            listening = [a for pid in pids for a in _listening(pid)]
            if {int(a.rsplit(":", 1)[1]) for a in listening} >= ports or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert {int(a.rsplit(":", 1)[1]) for a in listening} >= ports, listening
    assert all(_loopback(a) for a in listening), f"listening beyond loopback: {listening}"


def test_controller_metrics_exporter_listens_on_loopback_only(tls: Dict[str, Any]) -> None:
    before = set(_listening(os.getpid()))
    fleet = Fleet.from_urls(",".join(tls["grpc_urls"]), protocol="grpc", controller={"metrics_port": 0})
    client = tritonmix.grpc.InferenceServerClient(fleet=fleet, ssl=True, root_certificates=tls["ca_path"])
    try:
        new = set(_listening(os.getpid())) - before
        assert new, "the controller started no metrics exporter"
        assert all(_loopback(a) for a in new), f"exporter listening beyond loopback: {new}"
    finally:
        client.close()
    assert set(_listening(os.getpid())) <= before, "the exporter still listens after close()"


def test_fleet_supervisor_control_port_listens_on_loopback_only(tmp_path: Path) -> None:
    from tritonmix.local.supervisor import ControlServer

    before = set(_listening(os.getpid()))
    control = ControlServer(local=None, fleet_file="fleet.yaml", path=tmp_path / "state.json")  # type: ignore[arg-type]
    try:
        new = set(_listening(os.getpid())) - before
        assert len(new) == 1 and all(_loopback(a) for a in new), f"control port beyond loopback: {new}"
        assert control.url.startswith("127.0.0.1:")
    finally:
        control.close()  # before start(): must return (socketserver's shutdown() alone would wait forever)
    assert set(_listening(os.getpid())) <= before, "the control port still listens after close()"


# ---- TLS endpoints ----------------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=tritonmix-test-ca", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf", cwd=folder)
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
{servers}
}}
"""
NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            if ($http_authorization != "{token}") {{ return 401; }}
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


NGINX_FAILING = """
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 503; }}
    }}
"""


class Nginx:
    """nginx in the foreground (one process, no master), its config, pid file and logs in ``folder``: one TLS port
    per upstream (``urls``) and one TLS port that answers 503 to everything (``failing_url``)."""

    def __init__(self, folder: Path, upstreams: List[str], certs: Dict[str, Path]) -> None:
        self.ports = [free_port() for _ in upstreams]
        servers = "".join(NGINX_SERVER.format(port=p, cert=certs["cert"], key=certs["key"], token=TOKEN, upstream=u)
                          for p, u in zip(self.ports, upstreams))
        failing_port = free_port()
        servers += NGINX_FAILING.format(port=failing_port, cert=certs["cert"], key=certs["key"])
        self.failing_url = f"127.0.0.1:{failing_port}"
        self.folder = folder
        self.conf = folder / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(dir=folder, servers=servers))
        self.process = subprocess.Popen(["nginx", "-c", str(self.conf), "-p", str(folder), "-e",
                                         str(folder / "error.log")], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        self.urls = [f"127.0.0.1:{p}" for p in self.ports]
        deadline = time.monotonic() + 15
        while not all(_accepts(p) for p in self.ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.poll() is not None else "timeout"
                self.stop()
                raise RuntimeError(f"nginx did not start: {err} {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (make test installs it with nginx-light where apt-get is available)")
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certificates(folder)
    flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={certs['cert']}", f"--grpc-server-key={certs['key']}",
             f"--grpc-root-cert={certs['ca']}"]
    servers = [LocalTritonServer(REPO, extra_args=flags, ready_timeout_s=60.0) for _ in range(2)]
    nginx = None
    try:
        for server in servers:
            server.start()
        if shutil.which("nginx") is not None:
            nginx = Nginx(folder, [s.http_url for s in servers], certs)
        yield {"ca": certs["ca"].read_bytes(), "ca_path": str(certs["ca"]), "servers": servers,
               "grpc_urls": [s.grpc_url for s in servers], "https_urls": nginx.urls if nginx else None,
               "nginx": nginx}
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


def _need_nginx(tls: Dict[str, Any]) -> None:
    if tls["nginx"] is None:
        pytest.skip("nginx is not installed (make test installs nginx-light where apt-get is available)")


def _infer_checked(client: Any, module: Any, k: int, **kwargs: Any) -> None:
    a, b = sample(k)
    result = client.infer("add_sub", add_sub_inputs(module, a, b), **kwargs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def _served_everywhere(client: Any) -> None:
    counters = client.router.endpoint_counters()
    assert all(ok > 0 for ok, _, _ in counters), f"not every endpoint served: {counters}"
    assert all(failed == 0 for _, _, failed in counters), f"failed attempts: {counters}"


def test_grpc_tls_settings_reach_every_endpoint(tls: Dict[str, Any]) -> None:
    import grpc

    url = ",".join(tls["grpc_urls"])
    creds = grpc.ssl_channel_credentials(root_certificates=tls["ca"])
    for settings in ({"ssl": True, "root_certificates": tls["ca_path"]}, {"creds": creds}):
        with tritonmix.grpc.InferenceServerClient(url, seed=1, **settings) as client:
            for k in range(40):
                _infer_checked(client, tritonmix.grpc, k)
            _served_everywhere(client)
            assert_nothing_in_flight(client)
    # the control: without the CA the same endpoints refuse the client
    with tritonmix.grpc.InferenceServerClient(url, seed=1) as plain:
        with pytest.raises(InferenceServerException):
            _infer_checked(plain, tritonmix.grpc, 0, deadline_s=5.0)


def test_grpc_aio_tls_settings_reach_every_endpoint(tls: Dict[str, Any]) -> None:
    async def main() -> None:
        async with tritonmix.grpc.aio.InferenceServerClient(",".join(tls["grpc_urls"]), ssl=True,
                                                            root_certificates=tls["ca_path"], seed=2) as client:
            for k in range(40):
                a, b = sample(k)
                result = await client.infer("add_sub", add_sub_inputs(tritonmix.grpc.aio, a, b))
                np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
            _served_everywhere(client)

    asyncio.run(main())


def test_https_settings_and_headers_reach_every_endpoint(tls: Dict[str, Any]) -> None:
    _need_nginx(tls)
    url = ",".join(tls["https_urls"])
    options = {"ca_certs": tls["ca_path"]}
    with tritonmix.http.InferenceServerClient(url, ssl=True, ssl_options=options, seed=3) as client:
        for k in range(40):
            _infer_checked(client, tritonmix.http, k, headers={"Authorization": TOKEN})
        _served_everywhere(client)
        # the controls: the proxy does check the header, and the client does verify the certificate
        with pytest.raises(InferenceServerException) as info:
            _infer_checked(client, tritonmix.http, 0, headers={"Authorization": "Bearer wrong"})
        assert info.value.status() == "401"
    with tritonmix.http.InferenceServerClient(url, ssl=True, seed=3) as unverified:  # no CA: the system's
        with pytest.raises(Exception):
            _infer_checked(unverified, tritonmix.http, 0, headers={"Authorization": TOKEN}, deadline_s=5.0)


def test_https_aio_settings_and_headers_reach_every_endpoint(tls: Dict[str, Any]) -> None:
    _need_nginx(tls)

    async def main() -> None:
        context = ssl_module.create_default_context(cafile=tls["ca_path"])
        async with tritonmix.http.aio.InferenceServerClient(",".join(tls["https_urls"]), ssl=True,
                                                            ssl_context=context, seed=4) as client:
            for k in range(40):
                a, b = sample(k)
                result = await client.infer("add_sub", add_sub_inputs(tritonmix.http.aio, a, b),
                                            headers={"Authorization": TOKEN})
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
            _served_everywhere(client)

    asyncio.run(main())


def test_credentials_never_reach_logs_or_decisions(tls: Dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A fleet with one endpoint that fails every request (503) and two that reject a wrong token: failover,
    ejection, errors, readiness probes and controller ticks all run with the Authorization header set; the secret
    appears in no log record, error or decision."""
    _need_nginx(tls)
    url = ",".join([tls["nginx"].failing_url] + tls["https_urls"])
    fleet = Fleet.from_urls(url, protocol="http", controller={"interval_s": 0.1, "eject_base_s": 0.2})
    seen: List[str] = []
    caplog.set_level(logging.DEBUG)
    with tritonmix.http.InferenceServerClient(fleet=fleet, ssl=True, ssl_options={"ca_certs": tls["ca_path"]},
                                              seed=5) as client:
        for k in range(30):
            _infer_checked(client, tritonmix.http, k, headers={"Authorization": TOKEN})
        for _ in range(3):
            with pytest.raises(InferenceServerException) as info:
                _infer_checked(client, tritonmix.http, 0, headers={"Authorization": TOKEN + "-wrong"})
            seen.append(f"{info.value!r} {info.value.message()} {info.value.debug_details()}")
        time.sleep(0.3)  # a few controller ticks with the failures in view
        decisions = client.decisions()
        failing = client.router.fleet.names[0]
        # the failing endpoint was seen: tried and failed, or judged not ready by the controller's TLS probes
        seen_failing = client.router.endpoint_counters()[0][2] >= 1 or any(
            d.endpoint == failing and d.kind in ("down", "eject") for d in decisions)
        assert seen_failing, f"the failing endpoint {failing} was neither tried nor judged down: {decisions}"
    text = "\n".join([caplog.text, repr(decisions), str(decisions)] + seen)
    assert "ejected" in caplog.text or decisions, "nothing was logged: the check would be empty"
    assert SECRET not in text, "the Authorization header's secret leaked into a log, an error or a decision"


def test_auth_proxied_fleet_with_a_dead_endpoint_still_serves(tls: Dict[str, Any]) -> None:
    _need_nginx(tls)
    url = ",".join([f"127.0.0.1:{free_port()}"] + tls["https_urls"])
    with tritonmix.http.InferenceServerClient(url, ssl=True, ssl_options={"ca_certs": tls["ca_path"]},
                                              seed=6) as client:
        for k in range(20):
            _infer_checked(client, tritonmix.http, k, headers={"Authorization": TOKEN})


class ProbeMissedEndpoint(AssertionError):
    """The controller judged a serving endpoint not ready."""


def test_controller_health_probes_reach_tls_endpoints(tls: Dict[str, Any]) -> None:
    _need_nginx(tls)
    fleet = Fleet.from_urls(",".join(tls["https_urls"]), protocol="http", controller={"interval_s": 0.1})
    with tritonmix.http.InferenceServerClient(fleet=fleet, ssl=True, ssl_options={"ca_certs": tls["ca_path"]},
                                              seed=7) as client:
        deadline = time.monotonic() + 1.5
        k = 0
        while time.monotonic() < deadline:  # serving all along
            _infer_checked(client, tritonmix.http, k, headers={"Authorization": TOKEN})
            k += 1
        _served_everywhere(client)
        snapshot = client.controller_view()
        not_ready = [row.name for row in snapshot.endpoints if not row.ready]
        down = [d for d in client.decisions() if "not ready" in str(d)]
    if not_ready or down or snapshot.panic:
        raise ProbeMissedEndpoint(f"serving endpoints judged not ready: {not_ready}; panic={snapshot.panic}; "
                                  f"decisions: {down[:2]}")
