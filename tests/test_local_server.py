"""The launcher starts a real Triton server from the nvidia-pytriton wheel and says clearly why when it cannot."""
from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tritonmix.errors import ModelLoadError, ModelRepositoryError, PortInUse, ServerExited, TritonNotFound
from tritonmix.local import LocalTritonServer

from local_support import stubs_of

BROKEN_CONFIG = """name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def _inputs(module, a: np.ndarray, b: np.ndarray) -> list:
    in0 = module.InferInput("INPUT0", list(a.shape), "FP32")
    in0.set_data_from_numpy(a)
    in1 = module.InferInput("INPUT1", list(b.shape), "FP32")
    in1.set_data_from_numpy(b)
    return [in0, in1]


@pytest.fixture(scope="module")
def server(example_repository: Path):
    with LocalTritonServer(example_repository) as srv:
        yield srv


def test_urls_are_host_port_on_loopback(server: LocalTritonServer) -> None:
    for url in (server.http_url, server.grpc_url, server.metrics_url):
        host, port = url.split(":")
        assert host == "127.0.0.1" and int(port) > 0
    assert len({server.http_url, server.grpc_url, server.metrics_url}) == 3
    assert server.pid and server.running


def test_serves_example_over_http(server: LocalTritonServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, dtype=np.float32)
    result = client.infer("add_sub", _inputs(httpclient, a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    client.close()


def test_serves_example_over_grpc(server: LocalTritonServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("add_sub")
    a = np.array([[1.0, -2.0]], dtype=np.float32)
    result = client.infer("add_sub", _inputs(grpcclient, a, a))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(a))
    client.close()


def test_metrics_endpoint_counts_requests(server: LocalTritonServer) -> None:
    import urllib.request

    text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=5).read().decode()
    assert 'nv_inference_request_success{model="add_sub"' in text


def test_missing_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="does not exist"):
        LocalTritonServer(tmp_path / "nope")


def test_empty_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="holds no model"):
        LocalTritonServer(tmp_path)


def test_port_in_use_is_named(example_repository: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse, match=f"http port {port}"):
            LocalTritonServer(example_repository, http_port=port).start()


def test_model_load_failure_quotes_triton(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    (tmp_path / "broken" / "1" / "model.py").write_text('raise RuntimeError("boom from model.py")\n')
    server = LocalTritonServer(tmp_path)
    with pytest.raises(ModelLoadError, match="'broken' failed to load: .*boom from model.py") as info:
        server.start()
    assert "\n" not in str(info.value)
    assert not server.running


def test_missing_binary_is_named(example_repository: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRITONMIX_TRITONSERVER_ROOT", str(tmp_path))
    with pytest.raises(TritonNotFound, match="tritonserver binary not found"):
        LocalTritonServer(example_repository).start()


def test_kill_removes_process_and_shared_memory(example_repository: Path) -> None:
    server = LocalTritonServer(example_repository).start()
    pid, prefix = server.pid, server.shm_prefix
    assert prefix and prefix.startswith(f"tritonmix_{os.getpid()}_"), prefix
    with open(f"/proc/{pid}/maps") as maps:
        regions = {line.split()[-1] for line in maps if f"/dev/shm/{prefix}" in line}
    assert regions, "the python backend maps a shared memory region named with the server's prefix"
    server.kill()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not [path for path in regions if os.path.exists(path)]


def test_a_server_that_died_on_its_own_is_reaped_with_its_stubs_and_shared_memory(example_repository: Path,
                                                                                    tmp_path: Path) -> None:
    """The server and its stub die without us (an OOM kill takes the group): their regions stay in /dev/shm, and
    nothing of the dead server's can be read from /proc any more. Reaping it (``kill``) removes them, by the
    server's own shared-memory prefix, and kills any stub of it still running outside its process group (a
    stand-in here: Triton's own stubs die with their server, yet some were seen left with PPID 1)."""
    server = LocalTritonServer(example_repository).start()
    prefix = server.shm_prefix
    stray = None
    try:
        assert stubs_of(prefix), "the python backend runs a stub"
        os.killpg(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while (server.running or stubs_of(prefix)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.running and not stubs_of(prefix)
        assert glob.glob(f"/dev/shm/{prefix}*"), "a region is left for the reaper"
        stray = subprocess.Popen(  # a stub's command line (its region third), in a session of its own
            [str(tmp_path / "triton_python_backend_stub"), "-", f"{prefix}stray"], executable=sys.executable,
            stdin=subprocess.PIPE, start_new_session=True)
        stray.stdin.write(b"import time\ntime.sleep(60)\n")
        stray.stdin.close()
        deadline = time.monotonic() + 5.0
        while stray.pid not in stubs_of(prefix) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stray.pid in stubs_of(prefix)
    finally:
        server.kill()
    try:
        assert stray.wait(timeout=2.0) == -signal.SIGKILL, "a stub outlived its server"
    finally:
        if stray.poll() is None:
            stray.kill()
    assert not glob.glob(f"/dev/shm/{prefix}*"), "a shared-memory region outlived its server"


def test_a_frozen_server_stops_gracefully_and_thaw_needs_a_running_one(example_repository: Path) -> None:
    server = LocalTritonServer(example_repository).start()
    try:
        server.freeze()
        deadline = time.monotonic() + 2.0  # SIGSTOP is delivered asynchronously
        while _state(server.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(server.pid) == "T", "not stopped"
        started = time.monotonic()
        assert server.stop(timeout_s=15.0) == 0  # thawed first, so SIGTERM is acted on: an exit, not a SIGKILL
        assert time.monotonic() - started < 15.0 and not server.running and not server.frozen
        with pytest.raises(ServerExited, match="not running"):
            server.thaw()
    finally:
        server.kill()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonmix", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_help_lists_serve() -> None:
    result = _cli("--help")
    assert result.returncode == 0 and "serve" in result.stdout


def test_cli_serve_bad_repository_is_one_line(tmp_path: Path) -> None:
    result = _cli("serve", "--model-repository", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr


def test_cli_serve_prints_urls_and_stops_on_sigterm(example_repository: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tritonmix", "serve", "--model-repository", str(example_repository),
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        http_url = lines[1].split()[-1]
        client = httpclient.InferenceServerClient(http_url)
        assert client.is_server_ready()
        client.close()
        server_pid = int(lines[0].split("pid ")[1].split(")")[0])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopped" in out
    time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)


SIGTERM_CHILD = """
import sys, time
from tritonmix.cli import exit_cleanly_on_sigterm
from tritonmix.local import LocalTritonServer
exit_cleanly_on_sigterm()
with LocalTritonServer(sys.argv[1]) as server:
    print(server.pid, server.shm_prefix, flush=True)
    time.sleep(120)
"""


def test_a_command_stopped_by_sigterm_stops_its_servers_and_frees_their_shared_memory(
        example_repository: Path) -> None:
    """``tritonmix``'s commands (a bench, the demo) unwind on SIGTERM as on Ctrl-C: the servers they started are
    stopped and their stubs' shared memory removed (by default SIGTERM ends the process with none of that)."""
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, str(example_repository)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid_text, prefix = proc.stdout.readline().split()
        server_pid = int(pid_text)
        assert glob.glob(f"/dev/shm/{prefix}*"), "the python backend maps shared memory named with the prefix"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    assert not glob.glob(f"/dev/shm/{prefix}*")


def test_the_cli_says_a_command_was_stopped_by_sigterm_and_exits_143(monkeypatch, capsys) -> None:
    import argparse

    from tritonmix import cli

    def command(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # interrupted: the handler raises here
        return 0

    parser = argparse.ArgumentParser(prog="tritonmix")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.set_defaults(func=command, command="bench")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    previous = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    try:
        assert cli.main([]) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert time.monotonic() - started < 5.0
    assert "tritonmix bench: stopped by SIGTERM" in capsys.readouterr().err


def test_picked_port_taken_before_bind_is_retried(example_repository: Path, monkeypatch) -> None:
    """The race between picking a free port and the server binding it: start again on fresh ports."""
    import tritonmix.local.server as server_module

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        real_free_port = server_module.free_port
        picks = []

        def first_pick_collides(host: str = "127.0.0.1") -> int:
            picks.append(host)
            return taken if len(picks) == 1 else real_free_port(host)

        monkeypatch.setattr(server_module, "free_port", first_pick_collides)
        monkeypatch.setattr(server_module, "_port_is_free", lambda host, port: True)
        with LocalTritonServer(example_repository) as server:
            assert server.ports["http"] != taken
            assert httpclient.InferenceServerClient(server.http_url).is_server_ready()
    assert len(picks) >= 4  # a second round of picks happened


def test_a_crash_while_starting_is_retried_and_an_exit_status_is_not(tmp_path: Path, monkeypatch) -> None:
    """tritonserver 2.51 now and then aborts on a quick restart; a crash (a signal) while starting is retried,
    an exit with a status (a configuration error) is raised at once. ``_start_once`` is stubbed: no server runs."""
    from tritonmix.errors import ServerExited

    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    server = LocalTritonServer(repo)
    calls = []

    def crash_once() -> LocalTritonServer:
        calls.append(1)
        if len(calls) == 1:
            raise ServerExited("tritonserver exited with status -6 before it was ready", signal=6)
        return server

    monkeypatch.setattr(server, "_start_once", crash_once)
    assert server.start() is server and len(calls) == 2

    calls.clear()

    def bad_config() -> LocalTritonServer:
        calls.append(1)
        raise ServerExited("tritonserver exited with status 1 before it was ready: bad flag")

    monkeypatch.setattr(server, "_start_once", bad_config)
    with pytest.raises(ServerExited, match="status 1"):
        server.start()
    assert len(calls) == 1
