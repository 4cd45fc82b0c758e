"""Export the tiny SD to every target once, check the repositories, and serve python + neuron on a real Triton."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tritonmix.exporters import TARGETS, export_stable_diffusion, tiny_stable_diffusion
from tritonmix.exporters.parity import image_figure
from tritonmix.exporters.pbtxt import read_config
from tritonmix.exporters.reference import pipeline_image
from tritonmix.exporters.regenerate import config_files

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("tokenizer", "text_encoder", "unet", "vae_decoder", "denoise", "postprocess", "stable_diffusion")
PROMPT, SEED, STEPS, GUIDANCE = "a red cube on a table", 7, 3, 7.5


@pytest.fixture(scope="module")
def pipe():
    return tiny_stable_diffusion(seed=0)


@pytest.fixture(scope="module")
def exported(pipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny_sd"
    export_stable_diffusion(pipe, out, TARGETS, height=64, width=64)
    return out


@pytest.fixture(scope="module")
def reference_image(pipe) -> np.ndarray:
    return pipeline_image(pipe, PROMPT, SEED, STEPS, GUIDANCE, 64, 64)


def test_every_target_is_a_complete_repository(exported: Path) -> None:
    for target in TARGETS:
        for model in MODELS:
            assert (exported / target / model / "config.pbtxt").is_file(), (target, model)
            assert (exported / target / model / "1").is_dir()
    assert (exported / "python" / "unet" / "1" / "model.onnx").is_file()
    assert (exported / "cpu" / "unet" / "1" / "model.onnx").is_file()
    assert (exported / "neuron" / "unet" / "1" / "model.pt").is_file()
    assert not list(exported.parent.glob(".tiny_sd.*")), "staging folder left behind"
    assert not (exported / ".artefacts").exists()


def test_manifest_records_parity_versions_and_hashes(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    parts = manifest["parity"]["parts"]
    names = {f["name"] for f in parts}
    for part in ("text_encoder", "unet", "vae_decoder"):
        assert {part + ":onnx", part + ":torchscript", part + ":onnx_vs_torchscript"} <= names
    assert {f["batch"] for f in parts} == {1, 2}
    assert all(f["passed"] and f["max_abs"] < 1e-4 for f in parts)
    image = manifest["parity"]["image"]
    assert image["pipeline_repeat"]["max_abs"] == 0
    assert image["onnx_loop"]["passed"] and image["onnx_loop"]["max_abs"] <= 1
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert "float32" in manifest["tolerances"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((exported / rel).read_bytes()).hexdigest() == digest
    assert any("torch-neuronx" in n for n in manifest["notices"])


def _kinds(config) -> set[str]:
    from tritonclient.grpc import model_config_pb2

    return {model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group}


@pytest.mark.parametrize("part", ["text_encoder", "unet", "vae_decoder"])
def test_target_configs_parse_with_platform_and_kind(exported: Path, part: str) -> None:
    cpu = read_config(exported / "cpu" / part / "config.pbtxt")
    assert cpu.platform == "onnxruntime_onnx" and _kinds(cpu) == {"KIND_CPU"}
    assert cpu.HasField("dynamic_batching") and cpu.max_batch_size > 0
    gpu = read_config(exported / "gpu" / part / "config.pbtxt")
    assert gpu.platform == "onnxruntime_onnx" and _kinds(gpu) == {"KIND_GPU"}
    trt = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert len(gpu.model_warmup) == 1
    neuron = read_config(exported / "neuron" / part / "config.pbtxt")
    assert neuron.backend == "python" and _kinds(neuron) == {"KIND_MODEL"}
    assert neuron.parameters["COMPILED_MODEL"].string_value == "model.pt"
    assert "NEURON_CORE_START" in neuron.parameters
    python = read_config(exported / "python" / part / "config.pbtxt")
    assert python.backend == "python" and _kinds(python) == {"KIND_CPU"}


def test_ensemble_inputs_and_optional_defaults(exported: Path) -> None:
    for target in TARGETS:
        ensemble = read_config(exported / target / "stable_diffusion" / "config.pbtxt")
        assert ensemble.platform == "ensemble"
        inputs = {i.name: i.optional for i in ensemble.input}
        assert inputs == {"prompt": False, "seed": True, "steps": True, "guidance_scale": True}
        assert [o.name for o in ensemble.output] == ["image"]


def test_regenerated_configs_equal_committed(exported: Path) -> None:
    committed = config_files(REPO_ROOT / "model_repository" / "tiny_sd")
    assert committed, "no committed configs under model_repository/tiny_sd"
    assert config_files(exported) == committed


def _infer(module, url: str, with_optional: bool = True) -> np.ndarray:
    client = module.InferenceServerClient(url)
    values = [("prompt", np.array([PROMPT.encode()], dtype=object), "BYTES"),
              ("seed", np.array([SEED], np.int64), "INT64"), ("steps", np.array([STEPS], np.int32), "INT32")]
    if with_optional:
        values.append(("guidance_scale", np.array([GUIDANCE], np.float32), "FP32"))
    inputs = []
    for name, array, dtype in values:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer("stable_diffusion", inputs).as_numpy("image")


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    figure = image_figure("served", got, ref)
    assert got.dtype == np.uint8 and figure["passed"], figure


def test_python_target_serves_the_pipeline_image(exported: Path, reference_image: np.ndarray) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from tritonmix.local import LocalTritonServer

    with LocalTritonServer(exported / "python") as server:
        over_http = _infer(httpclient, server.http_url)
        over_grpc = _infer(grpcclient, server.grpc_url)
        default_guidance = _infer(httpclient, server.http_url, with_optional=False)
    _assert_close(over_http, reference_image)
    np.testing.assert_array_equal(over_http, over_grpc)  # same seed, same image
    np.testing.assert_array_equal(over_http, default_guidance)  # guidance_scale defaults to 7.5


def test_neuron_target_loads_torchscript_and_serves(exported: Path, reference_image: np.ndarray) -> None:
    import tritonclient.http as httpclient

    from tritonmix.local import LocalTritonServer

    with LocalTritonServer(exported / "neuron") as server:
        image = _infer(httpclient, server.http_url)
    _assert_close(image, reference_image)
