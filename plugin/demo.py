"""``make demo``: the quick scenario replay on a local fleet of EMULATED accelerator pools, with a report.

It starts six real Triton servers (the paper's five accelerator units plus a CPU pool, emulated and time-scaled),
replays one cosine-wave Poisson trace with capacity events through tritonmix (AUTO, COST, CAPACITY) and through the
baselines (round-robin, least outstanding with two choices, the paper's static weights), and prints the table,
the floor checks and where the plots went. ``python -m tritonmix.demo --hello`` only serves the example model.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

__all__ = ["main", "hello"]

EXAMPLE = Path(__file__).resolve().parent.parent / "model_repository" / "example"


def hello() -> int:
    """Serve the example repository and send a few requests through tritonmix's drop-in HTTP client."""
    import tritonmix.http as httpclient

    from .local import LocalTritonServer

    started = time.monotonic()
    with LocalTritonServer(EXAMPLE) as server:
        print(f"Triton {server!r} ready in {time.monotonic() - started:.1f} s")
        client = httpclient.InferenceServerClient(server.http_url)
        for n in range(3):
            a = np.arange(4, dtype=np.float32).reshape(1, 4) * (n + 1)
            inputs = [httpclient.InferInput("INPUT0", [1, 4], "FP32"), httpclient.InferInput("INPUT1", [1, 4], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(np.ones_like(a))
            result = client.infer("add_sub", inputs)
            print(f"add_sub({a.tolist()}, ones) -> {result.as_numpy('OUTPUT0').tolist()}")
        client.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--hello" in args:
        return hello()
    from .cli import main as cli_main

    out = "bench-results/demo"
    return cli_main(["bench", "scenario", "--quick", "--out", out])


if __name__ == "__main__":
    sys.exit(main())
