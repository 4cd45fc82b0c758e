"""Bad input and safety: one-line errors, refused outputs, failed parity leaves nothing, the package surface."""
from __future__ import annotations

from pathlib import Path

import pytest

import tritonmix.exporters as exporters
from tritonmix.cli import main
from tritonmix.exporters import OutputExistsError, ParityError, export_module, export_stable_diffusion
from tritonmix.exporters.loading import NotAPipelineError


def test_all_names_the_public_surface() -> None:
    assert set(exporters.__all__) == {
        "NotAPipelineError", "OutputExistsError", "ParityError", "TARGETS", "TargetOptions",
        "export_module", "export_stable_diffusion", "tiny_stable_diffusion"}
    for name in exporters.__all__:
        assert hasattr(exporters, name)


def test_unknown_target_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        export_stable_diffusion("tiny", tmp_path / "out", "python,tpu")
    assert not (tmp_path / "out").exists()


def test_missing_and_non_pipeline_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_stable_diffusion(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAPipelineError, match="not a diffusers pipeline"):
        export_stable_diffusion(tmp_path / "empty", tmp_path / "out")


def test_existing_output_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        export_stable_diffusion("tiny", out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("argv, needle", [
    (["--model", "/nonexistent/sd", "--out", "{tmp}/o"], "does not exist"),
    (["--model", "tiny", "--out", "{tmp}/o", "--targets", "python,tpu"], "unknown target 'tpu'"),
    (["--model", "{tmp}", "--out", "{tmp}/o"], "not a diffusers pipeline"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys, argv, needle) -> None:
    code = main(["export", "stable-diffusion"] + [a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if "error" in line]) == 1 and needle in err[-1]


def test_neuron_compile_without_neuronx_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "neuron").mkdir()
    assert main(["export", "neuron-compile", str(tmp_path / "neuron")]) == 2
    assert "torch-neuronx is not importable" in capsys.readouterr().err


def test_failed_parity_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import torch

    from tritonmix.exporters import parity

    monkeypatch.setitem(parity.TOLERANCES, "float32", (-1.0, 0.0))  # nothing can pass
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="parity failed for mlp"):
        export_module(torch.nn.Linear(4, 3), torch.randn(2, 4), "mlp", out, ["python"])
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_output(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    export_module(torch.nn.Linear(4, 3), torch.randn(2, 4), "mlp", out, ["python"], force=True)
    assert not (out / "old.txt").exists() and (out / "python" / "mlp" / "config.pbtxt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
