"""A local fleet of real Triton servers with emulated accelerators: serving, profile accuracy, and faults.

Timing checks run closed-loop clients over dozens of requests and leave margins for a shared 2-core machine:
latency within 10% of the profile, saturated throughput halved within 20%.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import tritonmix.http
from tritonmix import Fleet
from tritonmix.emulation.profiles import BUILTIN_PROFILES
from tritonmix.local import LocalFleet, format_table
from tritonmix.triton_metrics import scrape as scrape_metrics

from local_support import stubs_of

MODEL = "stable_diffusion"
FLEET = {
    "time_scale": 0.1,
    "endpoints": [
        {"name": "inf2-a", "accelerator": "neuron", "price_per_hour": 0.7582, "profile": "inf2.xlarge"},
        {"name": "g5-a", "accelerator": "gpu", "price_per_hour": 1.006, "protocol": "grpc",
         "profile": {"base": "g5.xlarge-triton", "latency_s": 1.0, "concurrency": 4}},
        {"name": "trn1-a", "accelerator": "neuron", "price_per_hour": 1.3438,
         "profile": {"base": "trn1.2xlarge", "latency_s": 1.2, "concurrency": 2}},
    ],
}


def _inputs(module, prompt: bytes = b"a red fox", seed: int = 7) -> list:
    text = module.InferInput("prompt", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt], dtype=object))
    seed_in = module.InferInput("seed", [1], "INT64")
    seed_in.set_data_from_numpy(np.array([seed], dtype=np.int64))
    return [text, seed_in]


def _load(url: str, clients: int, requests_each: int = 0, duration_s: float = 0.0) -> Tuple[List[float], float]:
    """Closed-loop clients (a fixed count of requests each, or for a duration); (latencies, completions/s)."""
    latencies: List[float] = []
    lock = threading.Lock()

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, concurrency=1)
        inputs = _inputs(httpclient)
        client.infer(MODEL, inputs)  # warm the connection
        barrier.wait()
        done, end = 0, time.monotonic() + duration_s
        while (done < requests_each) if requests_each else (time.monotonic() < end):
            started = time.perf_counter()
            client.infer(MODEL, inputs)
            with lock:
                latencies.append(time.perf_counter() - started)
            done += 1
        client.close()

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return latencies, len(latencies) / (time.monotonic() - started)


@pytest.fixture(scope="module")
def local() -> LocalFleet:
    with LocalFleet(Fleet.from_dict(FLEET)) as fleet:
        yield fleet


def test_three_endpoints_start_and_serve(local: LocalFleet) -> None:
    assert set(local.endpoints) == {"inf2-a", "g5-a", "trn1-a"}
    for spec in local.fleet:
        endpoint = local.endpoints[spec.name]
        assert spec.url == endpoint.url and endpoint.pid and endpoint.running
        client = httpclient.InferenceServerClient(endpoint.http_url)
        image = client.infer(MODEL, _inputs(httpclient)).as_numpy("image")
        assert image.shape == (1, 8, 8, 3) and image.dtype == np.uint8
        assert "EMULATED" in client.get_server_metadata()["name"]
        assert client.get_model_config(MODEL)["parameters"]["emulated"]["string_value"] == "true"
        client.close()
    assert local.fleet["g5-a"].url == local.endpoints["g5-a"].grpc_url
    grpc = grpcclient.InferenceServerClient(local.endpoints["g5-a"].grpc_url)
    same = grpc.infer(MODEL, _inputs(grpcclient)).as_numpy("image")
    other = grpc.infer(MODEL, _inputs(grpcclient, seed=8)).as_numpy("image")
    grpc.close()
    assert np.array_equal(same, image) and not np.array_equal(same, other)  # same prompt and seed, same image


def test_status_rows_from_triton_metrics(local: LocalFleet) -> None:
    rows = {row.name: row for row in local.status()}
    assert rows["inf2-a"].ready and rows["inf2-a"].emulated and rows["inf2-a"].profile == "inf2.xlarge"
    assert rows["inf2-a"].served >= 1 and rows["inf2-a"].mean_latency_ms > 0
    assert rows["g5-a"].concurrency == 4 and rows["trn1-a"].price_per_hour == 1.3438
    table = format_table(rows.values())
    assert "neuron (EMULATED inf2.xlarge)" in table and "EMULATED:" in table


@pytest.mark.parametrize("name, clients, expected_s", [("g5-a", 4, 0.100), ("trn1-a", 2, 0.120)])
def test_latency_holds_at_rated_concurrency(local: LocalFleet, name: str, clients: int, expected_s: float) -> None:
    latencies, _ = _load(local.endpoints[name].http_url, clients, requests_each=15)
    mean_s = float(np.mean(latencies))
    assert abs(mean_s - expected_s) <= 0.10 * expected_s, f"{name}: mean {mean_s * 1000:.1f} ms"


def test_set_capacity_to_half_halves_saturated_throughput(local: LocalFleet) -> None:
    url = local.endpoints["g5-a"].http_url
    _, full_rps = _load(url, clients=8, duration_s=2.0)
    local.set_capacity("g5-a", 2)
    try:
        assert {r.name: r for r in local.status()}["g5-a"].concurrency == 2
        _, half_rps = _load(url, clients=8, duration_s=2.0)
    finally:
        local.set_capacity("g5-a", 4)
    assert 0.4 <= half_rps / full_rps <= 0.6, f"full {full_rps:.1f} req/s, half {half_rps:.1f} req/s"


def test_capacity_cut_under_load_holds_nothing_and_queues_in_triton(local: LocalFleet) -> None:
    """A cut is a control-file write plus parking requests, not a reload: it returns at once, no request waits
    longer than the smaller pool makes it, and the wait shows as Triton queue time, not as compute time."""
    endpoint = local.endpoints["g5-a"]
    latencies: List[float] = []
    served_before = scrape_metrics(endpoint.metrics_url, MODEL)["success"]
    compute_before = _counter(endpoint.metrics_url, "nv_inference_compute_infer_duration_us")
    load = threading.Thread(target=lambda: latencies.extend(_load(endpoint.http_url, clients=6, duration_s=3.0)[0]))
    load.start()
    time.sleep(1.0)
    started = time.monotonic()
    local.set_capacity("g5-a", 2)
    took_s = time.monotonic() - started
    try:
        load.join()
        served = scrape_metrics(endpoint.metrics_url, MODEL)["success"] - served_before
        compute_s = (_counter(endpoint.metrics_url, "nv_inference_compute_infer_duration_us") - compute_before) / 1e6
    finally:
        local.set_capacity("g5-a", 4)
    assert took_s < 0.2, f"set_capacity took {took_s:.2f} s"
    # 6 clients on 2 slots of 100 ms: 0.3 s each in steady state; a reload held requests for 1.5 s or more
    assert max(latencies) < 0.6, f"slowest request {max(latencies):.3f} s"
    assert abs(compute_s / served - 0.100) <= 0.015, f"compute {compute_s / served * 1000:.1f} ms per request"


def test_the_parked_gauge_and_the_parking_requests_out_tell_those_still_queued(local: LocalFleet) -> None:
    """A cut to 2 of 4 slots sends 2 parking requests; queued behind the load, they count in Triton's pending gauge
    until they reach an instance, then in the emulation's parked gauge. The parking requests out (LocalFleet) less
    the gauge are what of the pending count is no client's (the scenario's settle check subtracts them)."""
    endpoint = local.endpoints["g5-a"]
    load = threading.Thread(target=lambda: _load(endpoint.http_url, clients=6, duration_s=2.0))
    load.start()
    time.sleep(0.5)
    local.set_capacity("g5-a", 2)
    try:
        assert local.parks_out("g5-a") == 2
        deadline = time.monotonic() + 3.0
        while _counter(endpoint.metrics_url, "tritonmix_emulated_parked") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scrape_metrics(endpoint.metrics_url, MODEL)["parked"] == 2.0
    finally:
        local.set_capacity("g5-a", 4)
        load.join()
    assert local.parks_out("g5-a") == 0  # released: each parking request returned
    assert scrape_metrics(endpoint.metrics_url, MODEL)["parked"] == 0.0


def test_a_cancelled_request_stops_and_gives_its_slot_back(local: LocalFleet) -> None:
    """gRPC cancellation (a hedge's losing copy): the requests being served stop at their next check, the one still
    queued in Triton never takes a slot, only the time held is busy time, Triton counts failures (not short
    successes), and the next request is served at once."""
    endpoint = local.endpoints["g5-a"]  # gRPC, 4 slots of 100 ms
    url = endpoint.metrics_url
    cancelled_before = _counter(url, "tritonmix_emulated_cancelled")
    busy_before = _counter(url, "tritonmix_emulated_service_us")
    counts_before = scrape_metrics(url, MODEL)
    client = grpcclient.InferenceServerClient(endpoint.grpc_url)
    try:
        calls = [client.async_infer(MODEL, _inputs(grpcclient, seed=k), lambda result, error: None)
                 for k in range(5)]  # 4 served, 1 queued
        time.sleep(0.03)
        for call in calls:
            call.cancel()
        deadline = time.monotonic() + 3.0
        while _counter(url, "tritonmix_emulated_cancelled") - cancelled_before < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        cancelled = _counter(url, "tritonmix_emulated_cancelled") - cancelled_before
        busy_s = (_counter(url, "tritonmix_emulated_service_us") - busy_before) / 1e6
        counts = scrape_metrics(url, MODEL)
        started = time.monotonic()
        client.infer(MODEL, _inputs(grpcclient))
        next_s = time.monotonic() - started
    finally:
        client.close()
    assert cancelled == 5
    # served to the end, the five would have been busy 0.5 s; stopped after ~30 ms, about 0.15 s
    assert busy_s < 0.3, f"busy {busy_s:.3f} s"
    assert counts["failure"] - counts_before["failure"] == 5 and counts["success"] == counts_before["success"]
    assert next_s < 0.25, f"the next request took {next_s:.3f} s"


def test_a_model_that_ignores_cancellation_serves_every_request_whole() -> None:
    """``cancellable: false`` (an ensemble's steps, a backend without cancellation support): the cancelled requests
    are served to their end and hold their slots; Triton counts them as successes."""
    fleet = {"time_scale": 0.1, "endpoints": [
        {"name": "g5-x", "accelerator": "gpu", "price_per_hour": 1.006, "protocol": "grpc",
         "profile": {"base": "g5.xlarge-triton", "latency_s": 1.0, "concurrency": 4, "cancellable": False}}]}
    with LocalFleet(Fleet.from_dict(fleet)) as local:
        endpoint = local.endpoints["g5-x"]
        url = endpoint.metrics_url
        deadline = time.monotonic() + 10.0  # ready is the server's word; its metrics port may answer a moment later
        while scrape_metrics(url, MODEL) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        busy_before = _counter(url, "tritonmix_emulated_service_us")
        client = grpcclient.InferenceServerClient(endpoint.grpc_url)
        try:
            calls = [client.async_infer(MODEL, _inputs(grpcclient, seed=k), lambda result, error: None)
                     for k in range(5)]
            time.sleep(0.03)
            for call in calls:
                call.cancel()
            deadline = time.monotonic() + 3.0
            while scrape_metrics(url, MODEL)["success"] < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            busy_s = (_counter(url, "tritonmix_emulated_service_us") - busy_before) / 1e6
            counts = scrape_metrics(url, MODEL)
            cancelled = _counter(url, "tritonmix_emulated_cancelled")
        finally:
            client.close()
    assert counts["success"] == 5 and counts["failure"] == 0 and cancelled == 0
    assert busy_s > 0.45, f"busy {busy_s:.3f} s"  # five requests of 100 ms each, served whole


def test_http_requests_are_served_whole_with_the_cancellation_checks(local: LocalFleet) -> None:
    """Triton's HTTP frontend passes no cancellation on: the checks never stop a request, and it holds its slot for
    the whole latency (the busy time per request stays the profile's)."""
    endpoint = local.endpoints["inf2-a"]
    busy_before = _counter(endpoint.metrics_url, "tritonmix_emulated_service_us")
    cancelled_before = _counter(endpoint.metrics_url, "tritonmix_emulated_cancelled")
    served_before = scrape_metrics(endpoint.metrics_url, MODEL)["success"]
    _load(endpoint.http_url, clients=1, requests_each=5)
    busy_s = (_counter(endpoint.metrics_url, "tritonmix_emulated_service_us") - busy_before) / 1e6
    served = scrape_metrics(endpoint.metrics_url, MODEL)["success"] - served_before  # the load's warm-up included
    expected_s = BUILTIN_PROFILES["inf2.xlarge"].latency_s * FLEET["time_scale"]
    assert _counter(endpoint.metrics_url, "tritonmix_emulated_cancelled") == cancelled_before
    assert served >= 5 and abs(busy_s / served - expected_s) <= 0.1 * expected_s, \
        f"busy {busy_s / served * 1000:.1f} ms per request"


def _counter(metrics_url: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=2.0).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{MODEL}"' in line)


def test_park_prompt_matches_the_model() -> None:
    from tritonmix.emulation import repository

    source = repository.MODEL_SOURCE.read_text()
    line = next(line for line in source.splitlines() if line.startswith("PARK_PROMPT = "))
    assert eval(line.split("=", 1)[1]) == repository.PARK_PROMPT  # noqa: S307 - a literal of our own file


def test_slow_down_multiplies_latency(local: LocalFleet) -> None:
    local.slow_down("inf2-a", 2.0)
    try:
        latencies, _ = _load(local.endpoints["inf2-a"].http_url, clients=1, requests_each=10)
    finally:
        local.slow_down("inf2-a", 1.0)
    assert abs(float(np.mean(latencies)) - 0.134) <= 0.15 * 0.134


def test_freeze_holds_requests_unanswered_and_thaw_serves_them(local: LocalFleet) -> None:
    endpoint = local.endpoints["inf2-a"]
    local.freeze("inf2-a")
    answered: List[float] = []
    try:
        assert endpoint.server.frozen
        sent = time.monotonic()
        held = threading.Thread(target=lambda: (_load(endpoint.http_url, clients=1, requests_each=1),
                                                answered.append(time.monotonic() - sent)))
        held.start()
        ready = httpclient.InferenceServerClient(endpoint.http_url, connection_timeout=0.5, network_timeout=0.5)
        with pytest.raises(Exception):  # the connection is accepted (the kernel's backlog) and nothing answers
            ready.is_server_ready()
        time.sleep(0.5)
        assert not answered, "a frozen server answered"
    finally:
        local.thaw("inf2-a")
    held.join(timeout=10.0)
    assert answered and answered[0] >= 0.5, answered  # served once thawed
    assert not endpoint.server.frozen
    latencies, _ = _load(endpoint.http_url, clients=1, requests_each=3)
    assert max(latencies) < 0.5


def test_kill_makes_unreachable_and_restart_brings_back(local: LocalFleet) -> None:
    endpoint = local.endpoints["trn1-a"]
    url, pid = endpoint.http_url, endpoint.pid
    local.set_capacity("trn1-a", 1)
    local.kill("trn1-a")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    client = httpclient.InferenceServerClient(url, connection_timeout=2.0)
    with pytest.raises(Exception):
        client.infer(MODEL, _inputs(httpclient))
    assert not {r.name: r for r in local.status()}["trn1-a"].ready
    local.restart("trn1-a")
    try:
        assert endpoint.http_url == url and endpoint.pid != pid
        client = httpclient.InferenceServerClient(url)
        assert client.infer(MODEL, _inputs(httpclient)).as_numpy("image").shape == (1, 8, 8, 3)
        client.close()
        assert {r.name: r for r in local.status()}["trn1-a"].concurrency == 1  # the cut survives the restart
    finally:
        local.set_capacity("trn1-a", 2)


def test_restart_reaps_a_server_that_died_on_its_own(local: LocalFleet) -> None:
    """A server that exited without us (a crash after a thaw, an OOM kill of its group) is replaced by ``restart``,
    which reaps it first: the /dev/shm regions it and its stubs left go with it."""
    endpoint = local.endpoints["inf2-a"]
    old, prefix = endpoint.server, endpoint.server.shm_prefix
    assert stubs_of(prefix) and glob.glob(f"/dev/shm/{prefix}*")
    os.killpg(old.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while (old.running or stubs_of(prefix)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not old.running and not stubs_of(prefix) and glob.glob(f"/dev/shm/{prefix}*")
    local.restart("inf2-a")
    assert not glob.glob(f"/dev/shm/{prefix}*"), "the dead server's shared memory was left"
    assert endpoint.server.shm_prefix != prefix
    latencies, _ = _load(endpoint.http_url, clients=1, requests_each=2)
    assert len(latencies) == 2


def test_unknown_endpoint_and_bad_values_are_named(local: LocalFleet) -> None:
    with pytest.raises(KeyError, match="no local endpoint named 'nope'"):
        local.kill("nope")
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        local.set_capacity("g5-a", 0)
    with pytest.raises(ValueError, match="must be a number > 0"):
        local.slow_down("g5-a", -1)


# -- the command line: fleet up in one process, status/faults/down in others -------------------------------------
def _cli(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tritonmix", "fleet", *args], capture_output=True, text=True,
                          timeout=240, env=env)


def _shm_of(pid: int) -> List[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "/dev/shm/" in line})


def test_cli_up_status_faults_down_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(json.dumps({"time_scale": 0.1, "endpoints": FLEET["endpoints"][:2]}))
    env = {**os.environ, "TRITONMIX_RUN_DIR": str(tmp_path / "run")}
    up = _cli(env, "up", str(fleet_file), "--detach")
    assert up.returncode == 0, up.stderr
    state = json.loads(next((tmp_path / "run").glob("fleet-*.json")).read_text())
    try:
        assert "EMULATED inf2.xlarge" in up.stdout and "EMULATED g5.xlarge-triton" in up.stdout
        # every command and client given the fleet file finds the running fleet of that file
        top = subprocess.run([sys.executable, "-m", "tritonmix", "status", str(fleet_file), "--once", "--interval",
                              "0.2"], capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"})
        assert top.returncode == 0 and "inf2-a" in top.stdout and "g5-a" in top.stdout, top.stderr
        monkeypatch.setenv("TRITONMIX_RUN_DIR", str(tmp_path / "run"))
        with tritonmix.http.InferenceServerClient(str(fleet_file)) as client:
            assert client.is_server_ready()
            assert [e.url for e in client.router.fleet] == [ep["http_url"] for ep in state["endpoints"].values()]
        assert _cli(env, "kill", str(fleet_file), "inf2-a").returncode == 0
        status = _cli(env, "status", str(fleet_file), "--json")
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert not rows["inf2-a"]["ready"] and rows["g5-a"]["ready"] and rows["g5-a"]["emulated"]
        bad = _cli(env, "set-capacity", str(fleet_file), "nope", "1")
        assert bad.returncode == 2 and "no local endpoint named 'nope'" in bad.stderr
        assert _cli(env, "restart", str(fleet_file), "inf2-a").returncode == 0
        state = json.loads(next((tmp_path / "run").glob("fleet-*.json")).read_text())
        servers = [ep["pid"] for ep in state["endpoints"].values()]
        regions = [region for pid in servers for region in _shm_of(pid)]
        assert regions, "the python backend maps shared memory"
    finally:
        down = _cli(env, "down", str(fleet_file))
        if down.returncode != 0:  # leave no supervisor (and so no server) behind, whatever failed
            try:
                os.kill(state["supervisor_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert down.returncode == 0, down.stderr
    for pid in [state["supervisor_pid"], *servers]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert not [region for region in regions if os.path.exists(region)]
    assert not list((tmp_path / "run").glob("fleet-*.json"))
    again = _cli(env, "status", str(fleet_file))
    assert again.returncode == 2 and "no fleet is up" in again.stderr


def test_the_scenario_tells_its_models_whether_to_honour_cancellation() -> None:
    from tritonmix.bench.scenario import QUICK
    from tritonmix.emulation.repository import EmulationSettings
    from tritonmix.emulation.profiles import resolve_profile

    for cancellable in (True, False):
        fleet = dataclasses.replace(QUICK, cancellable=cancellable).fleet()
        for spec in fleet:
            profile = resolve_profile(spec.profile, fleet.time_scale)
            assert profile.cancellable is cancellable
            assert EmulationSettings(spec.name, profile).parameters()["cancellable"] == ("1" if cancellable else "0")
