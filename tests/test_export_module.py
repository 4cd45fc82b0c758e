"""``export_module`` for any torch module, and the int8-quantized UNet on the cpu target."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tritonmix.exporters import TARGETS, export_module, export_stable_diffusion
from tritonmix.exporters.pbtxt import read_config


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.body(x) * scale


@pytest.fixture(scope="module")
def module_export(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("module") / "out"
    manifest = export_module(TwoHeads(), (torch.randn(2, 8), torch.ones(2, 1)), "two_heads", out, TARGETS)
    return out, manifest


def test_module_is_one_model_per_target(module_export) -> None:
    out, manifest = module_export
    for target in TARGETS:
        assert sorted(p.name for p in (out / target).iterdir()) == ["two_heads"]
        config = read_config(out / target / "two_heads" / "config.pbtxt")
        assert [i.name for i in config.input] == ["input__0", "input__1"]
        assert list(config.input[0].dims) == [8] and config.max_batch_size == 8
    assert read_config(out / "cpu" / "two_heads" / "config.pbtxt").platform == "onnxruntime_onnx"
    assert (out / "neuron" / "two_heads" / "1" / "model.pt").is_file()
    assert (out / "python" / "two_heads" / "1" / "model.py").is_file()
    figures = manifest["parity"]["parts"]
    assert {(f["name"], f["batch"]) for f in figures} >= {("two_heads:onnx", 1), ("two_heads:onnx", 2)}
    assert all(f["passed"] for f in figures)
    assert json.loads((out / "manifest.json").read_text())["model"] == "two_heads"


def test_module_onnx_runs_at_other_batch_sizes(module_export) -> None:
    import onnxruntime as ort

    out, _ = module_export
    session = ort.InferenceSession(str(out / "cpu" / "two_heads" / "1" / "model.onnx"))
    result = session.run(None, {"input__0": np.zeros((5, 8), np.float32), "input__1": np.ones((5, 1), np.float32)})
    assert result[0].shape == (5, 4)


def test_quantize_int8_adds_a_unet_with_its_own_figure(tmp_path: Path) -> None:
    manifest = export_stable_diffusion("tiny", tmp_path / "q", ["cpu"], quantize="int8")
    config = read_config(tmp_path / "q" / "cpu" / "unet_int8" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx"
    int8 = [f for f in manifest["parity"]["parts"] if f["name"] == "unet_int8:onnx"]
    assert len(int8) == 2 and all(f["passed"] and f["atol"] == 0.5 for f in int8)
