"""A real Triton Inference Server process on this machine, started from the nvidia-pytriton wheel's binary.

``LocalTritonServer`` is a context manager: it checks the repository and the ports, starts ``tritonserver`` bound to
127.0.0.1 (by default) with the python backend set up for this interpreter, waits until ``/v2/health/ready`` answers,
and stops it on exit. A server never outlives the Python process that started it: the child gets SIGKILL from the
kernel if its parent dies (``PR_SET_PDEATHSIG``), and an ``atexit`` hook stops every server still running. Its
python backend's /dev/shm regions and stubs carry a prefix of the server's own, so stopping or reaping it removes
them even when it died on its own.
Note: the death signal follows the *thread* that started the server, so start servers from a long-lived thread.
"""
from __future__ import annotations

import atexit
import ctypes
import glob
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import List, Optional, Sequence, Union

from ..errors import LaunchError, ModelLoadError, ModelRepositoryError, PortInUse, ServerExited
from ._install import backend_directory, find_triton, server_environment

__all__ = ["LocalTritonServer", "free_port"]

logger = logging.getLogger(__name__)

_LIVE: "weakref.WeakSet[LocalTritonServer]" = weakref.WeakSet()
#: the python backend names its shared-memory regions <prefix><uuid> (Triton's ``shm-region-prefix-name``); each
#: server started here gets a prefix of its own, so what it leaves is found by name even after it died on its own
_SHM_DIR = "/dev/shm"
_PREFIX_OPTION = "shm-region-prefix-name="
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.+?)\"?$", re.MULTILINE)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # own process group: Ctrl-C in a terminal reaches us, and we forward it


def check_model_repository(path: Union[str, Path]) -> Path:
    """The repository as an absolute path; ModelRepositoryError when it is missing or holds no model."""
    repo = Path(path).expanduser().resolve()
    if not repo.exists():
        raise ModelRepositoryError(f"model repository {repo} does not exist")
    if not repo.is_dir():
        raise ModelRepositoryError(f"model repository {repo} is not a folder")
    models = [p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not models:
        raise ModelRepositoryError(f"model repository {repo} holds no model (no sub-folder)")
    return repo


class LocalTritonServer:
    """One tritonserver process. URLs are ``host:port`` without a scheme, as tritonclient expects.

    Args:
        model_repository: folder of models (each a sub-folder with ``config.pbtxt`` and versions).
        http_port, grpc_port, metrics_port: fixed ports, or None to pick free ones.
        host: address to bind; 127.0.0.1 unless told otherwise.
        model_control_mode: Triton's ``none`` (load all at start), ``poll`` or ``explicit``.
        load_models: with ``explicit`` mode, the models to load at start (``*`` for all).
        extra_args: more tritonserver flags.
        ready_timeout_s: how long to wait for readiness before giving up.
    """

    def __init__(
        self,
        model_repository: Union[str, Path],
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        metrics_port: Optional[int] = None,
        *,
        host: str = "127.0.0.1",
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 180.0,
        log_verbose: int = 0,
    ) -> None:
        self.model_repository = check_model_repository(model_repository)
        self.host = host
        self._requested = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports = {"http": 0, "grpc": 0, "metrics": 0}
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.log_verbose = log_verbose
        self._process: Optional[subprocess.Popen] = None
        self._log_file = None
        self.log_path: Optional[Path] = None
        self._lock = threading.Lock()
        self._frozen = False
        #: this start's shared-memory prefix (None when ``extra_args`` names one: then it is the caller's to clean)
        self.shm_prefix: Optional[str] = None

    # -- addresses ---------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"{self.host}:{self.ports['metrics']}"

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalTritonServer({str(self.model_repository)!r}, http={self.http_url}, {state})"

    # -- life cycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> "LocalTritonServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> "LocalTritonServer":
        """Start the server and wait until it is ready; raise a LaunchError subclass naming what went wrong.

        Ports picked here (none given) can be taken by another process between the pick and the server's bind;
        then the server is started again on fresh ports, up to three times. A server killed by a signal while it
        starts (a crash, not a configuration error: those exit with a status) is started again too.
        """
        auto_ports = all(port is None for port in self._requested.values())
        for attempt in range(3):
            try:
                return self._start_once()
            except PortInUse:
                if not auto_ports or attempt == 2:
                    raise
                logger.info("a picked port was taken before tritonserver bound it; retrying on fresh ports")
            except ServerExited as exc:
                if exc.signal is None or attempt == 2:
                    raise
                # killed by a signal while starting (tritonserver 2.51 aborts now and then on a quick restart:
                # "epoll_wait error: Bad file descriptor"): a crash, not a configuration error; start it again
                logger.warning("tritonserver crashed while starting (%s); starting it again", exc)
        raise AssertionError("unreachable")

    def _start_once(self) -> "LocalTritonServer":
        with self._lock:
            if self.running:
                return self
            self._choose_ports()
            install = find_triton()
            backends = backend_directory(install)
            self._open_log()
            own = not any(_PREFIX_OPTION in arg for arg in self.extra_args)
            self.shm_prefix = f"tritonmix_{os.getpid()}_{secrets.token_hex(6)}_" if own else None
            self._process = subprocess.Popen(
                self._command(install.binary, backends),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=server_environment(install),
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
            _LIVE.add(self)
        logger.info("tritonserver pid %s starting on http=%s", self.pid, self.http_url)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _choose_ports(self) -> None:
        taken: List[int] = []
        for kind, requested in self._requested.items():
            if requested is None:
                port = free_port(self.host)
                while port in taken:
                    port = free_port(self.host)
            else:
                port = int(requested)
                if not _port_is_free(self.host, port):
                    raise PortInUse(f"{kind} port {port} on {self.host} is already in use")
            taken.append(port)
            self.ports[kind] = port

    def _open_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        self._log_file = os.fdopen(fd, "wb")
        self.log_path = Path(name)

    def _command(self, binary: Path, backends: Path) -> List[str]:
        cmd = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.ports['http']}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            f"--model-control-mode={self.model_control_mode}",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in self.load_models]
        if self.shm_prefix is not None:
            cmd.append(f"--backend-config=python,{_PREFIX_OPTION}{self.shm_prefix}")
        return cmd + list(self.extra_args)

    def _wait_ready(self) -> None:
        """Ready means: *our* process logged that all three services started, is alive, and answers ready.

        The log check matters: when a port was taken by another Triton, ours logs "Started HTTPService", fails to
        bind and exits, while the other one answers ready on that port.
        """
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        started = f"Started Metrics Service at {self.metrics_url}"
        while time.monotonic() < deadline:
            code = self._process.poll() if self._process else -1
            if code is not None:
                raise self._startup_error(code)
            text = self.log_text()
            if "failed to start" in text:
                time.sleep(0.05)
                continue  # the process is about to exit with the reason: report it from there
            if self._load_failures():
                name, reason = self._load_failures()[0]
                raise ModelLoadError(f"model '{name}' failed to load: {reason}")
            if started in text and self._answers_ready(url) and self.running:
                logger.info("tritonserver pid %s ready", self.pid)
                return
            time.sleep(0.1)
        raise LaunchError(
            f"tritonserver did not become ready within {self.ready_timeout_s:.0f} s (log: {self.log_path})"
        )

    @staticmethod
    def _answers_ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def log_text(self) -> str:
        """What the server has written so far (stdout and stderr)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _load_failures(self) -> List[tuple]:
        # Triton writes the reason with escaped newlines and a traceback after them: keep the first line.
        return [(m.group(1), m.group(2).split("\\n")[0].strip()) for m in _LOAD_FAILURE.finditer(self.log_text())]

    def _startup_error(self, code: int) -> LaunchError:
        failures = self._load_failures()
        if failures:
            name, reason = failures[0]
            return ModelLoadError(f"model '{name}' failed to load: {reason}")
        text = self.log_text()
        for line in text.splitlines():
            if "already in use" in line or ("bind" in line.lower() and "fail" in line.lower()):
                return PortInUse(f"tritonserver could not bind a port: {_message(line)}")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("E") or "error" in ln.lower()]
        detail = (errors or lines or ["no output"])[-1]
        return ServerExited(f"tritonserver exited with status {code} before it was ready: {detail}",
                            signal=-code if code < 0 else None)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """SIGSTOP the server and its python backend stubs (its process group), as a host stall or a long GC pause
        would: connections stay open and accept, nothing answers. ``thaw()`` resumes it; stopping a frozen server
        thaws it first."""
        self._signal_group(signal.SIGSTOP, frozen=True)

    def thaw(self) -> None:
        """SIGCONT the process group frozen by ``freeze()``; requests sent meanwhile are then served."""
        self._signal_group(signal.SIGCONT, frozen=False)

    def _signal_group(self, sig: int, frozen: bool) -> None:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                raise ServerExited(f"tritonserver on {self.http_url} is not running")
            os.killpg(self._process.pid, sig)
            self._frozen = frozen

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout_s``); returns the exit status."""
        return self._terminate(signal.SIGTERM, timeout_s)

    def kill(self) -> Optional[int]:
        """SIGKILL the server at once (fault injection); returns the exit status."""
        return self._terminate(signal.SIGKILL, 5.0)

    def _terminate(self, sig: int, timeout_s: float) -> Optional[int]:
        with self._lock:
            process = self._process
            if process is None:
                return None
            shm_paths = _shared_memory_of(process.pid)
            if process.poll() is None:
                try:
                    process.send_signal(sig)
                    if self._frozen:  # a stopped process acts on SIGTERM only once it runs again
                        os.killpg(process.pid, signal.SIGCONT)
                        self._frozen = False
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("tritonserver pid %s did not stop in %.0f s; killing it", process.pid, timeout_s)
                    process.kill()
                    process.wait()
                except ProcessLookupError:
                    pass
            _kill_group(process.pid)
            if self.shm_prefix is not None:
                # what the group kill and the maps cannot reach: a stub outside the server's process group, and
                # the regions of a server that died on its own (its maps are gone) or of a stub started after the
                # snapshot
                _kill_stubs(self.shm_prefix)
                shm_paths = sorted(set(shm_paths) | set(glob.glob(f"{_SHM_DIR}/{glob.escape(self.shm_prefix)}*")))
            _unlink_all(shm_paths)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            _LIVE.discard(self)
            return process.returncode


def _message(line: str) -> str:
    """The quoted message of a Triton log line (without the timestamp and source prefix)."""
    quoted = line.split('] "', 1)
    return quoted[1].rstrip('" ').strip() if len(quoted) == 2 else line.strip()


def _shared_memory_of(pid: int) -> List[str]:
    """The /dev/shm regions the server has mapped (its python backend's); a killed server cannot remove them."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return sorted({line.split()[-1] for line in maps if "/dev/shm/" in line})
    except OSError:
        return []


def _unlink_all(paths: Sequence[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove %s: %s", path, exc)


def _kill_stubs(prefix: str) -> None:
    """SIGKILL every python backend stub whose shared-memory region carries ``prefix`` (its third argument)."""
    mine = prefix.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[0].endswith(b"triton_python_backend_stub") and argv[2].startswith(mine):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _kill_group(pgid: int) -> None:
    """The python backend stubs are the server's children, in its process group: make sure none is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all() -> None:  # pragma: no cover - exercised at interpreter exit
    for server in list(_LIVE):
        try:
            server.stop(timeout_s=10.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            logger.exception("could not stop %r", server)
