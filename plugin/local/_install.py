"""Where the tritonserver of the nvidia-pytriton wheel lives, and the environment its python backend needs.

The traps (../shared/ENVIRONMENT.md) and how each is handled here:

- only the stub for the running Python works: the backend folder is ``DIR/python/`` with the files of
  ``backends/python/`` plus ``python_backend_stubs/3.X/triton_python_backend_stub`` made executable;
- the stub links ``libpython3.X.so``: the interpreter's own ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``, then the
  wheel's bundled libraries (``nvidia_pytriton.libs``);
- the stub imports packages from the first ``python3`` on ``PATH`` (``PYTHONPATH`` is ignored): this interpreter's
  ``bin`` folder goes first on ``PATH``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Dict, Optional

from ..errors import TritonNotFound

__all__ = ["ROOT_ENV", "TritonInstall", "find_triton", "backend_directory", "server_environment"]


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    """The pieces of a tritonserver installation."""

    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stub: Path


#: Environment variable naming another tritonserver folder laid out as the wheel's (bin/, backends/, stubs).
ROOT_ENV = "TRITONMIX_TRITONSERVER_ROOT"


def _wheel_root() -> Path:
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError as exc:
        raise TritonNotFound(
            "the tritonserver binary comes from the nvidia-pytriton wheel, which is not installed "
            "(pip install nvidia-pytriton)"
        ) from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def find_triton() -> TritonInstall:
    """Locate tritonserver and the python backend stub for this interpreter, or raise TritonNotFound.

    ``$TRITONMIX_TRITONSERVER_ROOT`` points at another folder with the wheel's layout; by default the wheel's own.
    """
    override = os.environ.get(ROOT_ENV)
    root = Path(override) if override else _wheel_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        libs_dir=root.parent.parent / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for label, path in (("tritonserver binary", install.binary), ("python backend", install.python_backend_dir)):
        if not path.exists():
            raise TritonNotFound(f"{label} not found at {path} (reinstall nvidia-pytriton)")
    if not install.stub.exists():
        raise TritonNotFound(f"no python backend stub for Python {version} at {install.stub}")
    return install


def backend_directory(install: TritonInstall, cache_root: Optional[Path] = None) -> Path:
    """A ``--backend-directory`` holding ``python/`` with the stub of this interpreter; built once and reused.

    The folder name hashes the source paths and sizes, so a reinstalled wheel gets a fresh copy. It is created in a
    temporary folder and renamed into place, so concurrent launches never see a half-copied backend.
    """
    key = hashlib.sha256(
        f"{install.python_backend_dir}|{install.stub}|{install.stub.stat().st_size}|{os.getuid()}".encode()
    ).hexdigest()[:16]
    root = Path(cache_root or tempfile.gettempdir()) / f"tritonmix-backends-{key}"
    if (root / "python" / "triton_python_backend_stub").exists():
        return root
    staging = Path(tempfile.mkdtemp(prefix=".tritonmix-backends-", dir=root.parent))
    try:
        target = staging / "python"
        shutil.copytree(install.python_backend_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, target / "triton_python_backend_stub")
        (target / "triton_python_backend_stub").chmod(0o755)
        try:
            staging.rename(root)
        except OSError:  # another process won the race: use its copy
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def server_environment(install: TritonInstall, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for tritonserver: libpython first, the wheel's libraries, this interpreter's bin on PATH."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld_parts = [libdir, str(install.libs_dir), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in ld_parts if p)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    env.pop("PYTHONHOME", None)
    return env
