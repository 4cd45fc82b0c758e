"""The real tiny-SD repository (tritonmix.bench.realsd) loads in a local Triton on the CPU and serves images;
the realpair bench's argument parsing and markdown. (The GPU run itself: benches/results/realpair-h100.md.)"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

import tritonclient.http as httpclient  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from tritonmix.bench.realpair import parse_args  # noqa: E402
from tritonmix.bench.realsd import RealSDSettings, write_real_sd_repository  # noqa: E402
from tritonmix.bench.senders import make_inputs  # noqa: E402
from tritonmix.local import LocalTritonServer  # noqa: E402


def test_repository_config_parses_back(tmp_path):
    repo = write_real_sd_repository(tmp_path, RealSDSettings(device="cuda", instances=3, image_size=32))
    text = (repo / "stable_diffusion" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.backend == "python" and config.instance_group[0].count == 3
    assert list(config.output[0].dims) == [-1, 32, 32, 3]
    assert config.parameters["device"].string_value == "cuda"
    assert (repo / "stable_diffusion" / "1" / "model.py").exists()
    assert (repo / "stable_diffusion" / "1" / "tiny_sd.py").exists()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RealSDSettings(device="tpu")
    with pytest.raises(ValueError):
        RealSDSettings(image_size=12)


def test_cli_defaults():
    args = parse_args(["--out", "x"])
    assert args.policies == ["tritonmix-auto", "round-robin"] and args.duration == 40.0


def test_real_model_serves_on_cpu(tmp_path):
    repo = write_real_sd_repository(tmp_path, RealSDSettings(device="cpu", steps=2, image_size=16, threads=1))
    with LocalTritonServer(repo, ready_timeout_s=120) as server:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        try:
            first = client.infer("stable_diffusion", make_inputs(httpclient, seed=7)).as_numpy("image")
            again = client.infer("stable_diffusion", make_inputs(httpclient, seed=7)).as_numpy("image")
        finally:
            client.close()
    assert first.shape == (1, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
