"""Tiny Stable Diffusion end to end through the ``stable_diffusion`` ensemble: via tritonmix and via tritonclient.

The tiny SD (random weights, 64x64, 3 steps) is exported to the ``python`` target and served by one real Triton
server; both clients call the same ensemble with the same prompt and seed.

    .venv/bin/python -m pytest benches/test_bench_sd.py --benchmark-only -q
"""
from __future__ import annotations

from typing import Any, Iterator, List

import numpy as np
import pytest
import tritonclient.http as tc_http

import tritonmix.http
from tritonmix.exporters import export_stable_diffusion, tiny_stable_diffusion
from tritonmix.local import LocalTritonServer

PROMPT, SEED, STEPS = "a red cube on a table", 7, 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTritonServer]:
    out = tmp_path_factory.mktemp("sd") / "tiny_sd"
    export_stable_diffusion(tiny_stable_diffusion(seed=0), out, ("python",), height=64, width=64)
    with LocalTritonServer(out / "python") as srv:
        yield srv


def _inputs(module: Any) -> List[Any]:
    values = [("prompt", np.array([PROMPT.encode()], dtype=object), "BYTES"),
              ("seed", np.array([SEED], np.int64), "INT64"), ("steps", np.array([STEPS], np.int32), "INT32")]
    inputs = []
    for name, array, dtype in values:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("client_module", [tc_http, tritonmix.http], ids=["tritonclient", "tritonmix"])
def test_tiny_sd_end_to_end(benchmark: Any, server: LocalTritonServer, client_module: Any) -> None:
    client = client_module.InferenceServerClient(server.http_url)
    try:
        image = benchmark.pedantic(lambda: client.infer("stable_diffusion", _inputs(client_module)).as_numpy("image"),
                                   rounds=20, warmup_rounds=2)
    finally:
        client.close()
    assert image.dtype == np.uint8 and image.shape[-3:] == (64, 64, 3)
