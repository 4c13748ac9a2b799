"""ONNX export: the graph runs in onnxruntime at other sizes and matches `cldyn fuse`'s pipeline."""

from pathlib import Path

import numpy as np
import onnxruntime
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.fusion import BaseFuser, fuse_images
from cldyn_cli.models.loading import load_vfn

app = create_app()

runner = CliRunner()


def test_export_matches_the_fuse_pipeline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "max difference" in result.output
    rng = np.random.default_rng(0)
    ir, vis = rng.random((37, 53), dtype=np.float32), rng.random((37, 53, 3), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir[None, None], "vis": vis.transpose(2, 0, 1)[None]})
    expected = fuse_images(BaseFuser(load_vfn()[0], torch.device("cpu")), ir, vis)
    assert out.shape == (1, 3, 37, 53)
    assert np.abs(out[0].transpose(1, 2, 0) - expected).max() < 1e-4


def test_export_refuses_a_folder_and_a_foreign_checkpoint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx"), "--base", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()


def test_missing_onnx_is_one_line(tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: exporting needs the onnx package: pip install 'cldyn[export]'"]
    assert not (tmp_path / "m.onnx").exists()
