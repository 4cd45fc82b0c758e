"""``make demo``: start a real local Triton server on the example repository, send a few requests, print them.

This is the foundation's demo; the fleet scenario replaces it once the fleet, clients and controller exist.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

EXAMPLE = Path(__file__).resolve().parent.parent / "model_repository" / "example"


def main() -> int:
    import tritonclient.http as httpclient

    from .local import LocalTritonServer

    started = time.monotonic()
    with LocalTritonServer(EXAMPLE) as server:
        print(f"Triton {server!r} ready in {time.monotonic() - started:.1f} s")
        client = httpclient.InferenceServerClient(server.http_url)
        meta = client.get_server_metadata()
        print(f"server: {meta['name']} {meta['version']}")
        for n in range(3):
            a = np.arange(4, dtype=np.float32).reshape(1, 4) * (n + 1)
            b = np.ones((1, 4), dtype=np.float32)
            inputs = []
            for name, value in (("INPUT0", a), ("INPUT1", b)):
                tensor = httpclient.InferInput(name, list(value.shape), "FP32")
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            t0 = time.perf_counter()
            result = client.infer("add_sub", inputs)
            ms = (time.perf_counter() - t0) * 1e3
            print(f"add_sub({a.tolist()}, {b.tolist()}) -> OUTPUT0 {result.as_numpy('OUTPUT0').tolist()} "
                  f"OUTPUT1 {result.as_numpy('OUTPUT1').tolist()} in {ms:.1f} ms")
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
