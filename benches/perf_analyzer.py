"""perf_analyzer, the Triton project's load generator, for benchmarks: taken from the tritonclient 2.41.1 wheel (the
last one that ships the binary) and cached under ``~/.cache/tritonmix/perf_analyzer-2.41.1`` (never committed).

    pa = PerfAnalyzer.ensure()          # downloads the wheel once with pip, extracts bin/perf_analyzer, links libs
    row = pa.run("add_sub", "127.0.0.1:8000", concurrency=1, shapes={"INPUT0": [4], "INPUT1": [4]})
    row.p50_us, row.p99_us, row.throughput, row.errors

It needs ``libb64.so.0d`` and ``libcudart.so.12``: both lie in ``nvidia_pytriton.libs`` under hashed names, so the
cache holds symlinks with the plain names and the runs put that folder on ``LD_LIBRARY_PATH``.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

VERSION = "2.41.1"
MEMBER = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tritonmix" / f"perf_analyzer-{VERSION}"


@dataclasses.dataclass(frozen=True)
class PaRow:
    """One perf_analyzer measurement (latencies in microseconds, throughput in inferences per second)."""

    concurrency: int
    throughput: float
    p50_us: float
    p90_us: float
    p99_us: float
    avg_us: float
    errors: int
    requests: int
    output: str


class PerfAnalyzer:
    def __init__(self, binary: Path, lib_dir: Path) -> None:
        self.binary = binary
        self.lib_dir = lib_dir

    @classmethod
    def ensure(cls, cache: Path = CACHE) -> "PerfAnalyzer":
        binary, libs = cache / "perf_analyzer", cache / "lib"
        if not os.access(binary, os.X_OK):
            cache.mkdir(parents=True, exist_ok=True)
            wheels = glob.glob(str(cache / f"tritonclient-{VERSION}-*.whl"))
            if not wheels:
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache),
                                f"tritonclient=={VERSION}"], check=True)
                wheels = glob.glob(str(cache / f"tritonclient-{VERSION}-*.whl"))
            with zipfile.ZipFile(wheels[0]) as wheel, open(binary.with_suffix(".tmp"), "wb") as out:
                out.write(wheel.read(MEMBER))
            binary.with_suffix(".tmp").chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
            os.replace(binary.with_suffix(".tmp"), binary)
        libs.mkdir(exist_ok=True)
        import pytriton  # only to find the wheel's libs folder beside it
        pytriton_libs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
        for plain, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
            found = sorted(pytriton_libs.glob(pattern))
            if not found:
                raise RuntimeError(f"perf_analyzer needs {plain}: no {pattern} in {pytriton_libs}")
            link = libs / plain
            if not link.exists():
                link.symlink_to(found[0])
        return cls(binary, libs)

    def run(self, model: str, url: str, *, concurrency: int, protocol: str = "http",
            shapes: Optional[Dict[str, Sequence[int]]] = None, window_ms: int = 2000, max_trials: int = 3,
            stability: int = 999, extra: Sequence[str] = (), timeout_s: float = 300.0) -> PaRow:
        """One measurement at ``concurrency``; ``errors`` counts failed requests perf_analyzer reported."""
        out_csv = Path(os.environ.get("TMPDIR", "/tmp")) / f"pa-{os.getpid()}-{concurrency}.csv"
        args = [str(self.binary), "-m", model, "-u", url, "-i", protocol, "--concurrency-range",
                f"{concurrency}:{concurrency}", "-f", str(out_csv), "-p", str(window_ms), "--max-trials",
                str(max_trials), "-s", str(stability), *extra]
        for name, dims in (shapes or {}).items():
            args += ["--shape", f"{name}:{','.join(str(d) for d in dims)}"]
        env = dict(os.environ, LD_LIBRARY_PATH=f"{self.lib_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout_s)
        output = proc.stdout + proc.stderr
        rows = list(csv.DictReader(out_csv.open())) if out_csv.exists() else []
        out_csv.unlink(missing_ok=True)
        if not rows:
            raise RuntimeError(f"perf_analyzer failed (status {proc.returncode}): {output[-2000:]}")
        r = rows[-1]
        return PaRow(concurrency, float(r["Inferences/Second"]), float(r["p50 latency"]), float(r["p90 latency"]),
                     float(r["p99 latency"]), _avg(r), failed_requests(output), _requests(output), output)


def _avg(row: Dict[str, str]) -> float:
    parts = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
             "Server Compute Infer", "Server Compute Output", "Client Recv")
    return sum(float(row.get(p, 0) or 0) for p in parts)


def failed_requests(output: str) -> int:
    """Failed requests: perf_analyzer's own count where it prints one, else the error lines it printed."""
    counted = [int(x) for x in re.findall(r"(?:Failed|failed) requests?:?\s*(\d+)", output)]
    return max(counted) if counted else len(re.findall(r"(?i)thread \[\d+\] had error", output))


def _requests(output: str) -> int:
    found: List[int] = [int(x) for x in re.findall(r"Request count: (\d+)", output)]
    return sum(found)


if __name__ == "__main__":
    pa = PerfAnalyzer.ensure()
    print(pa.binary)
