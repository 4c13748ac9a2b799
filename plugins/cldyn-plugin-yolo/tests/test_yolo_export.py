"""`cldyn export --task det`: one ONNX graph with the detector's layers up to its tapped one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.export import FusionGraph, compensated_reference
from cldyn_cli.models.loading import load_compensation, save_compensation
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import load
from yolo_testdata import Family

app = create_app()
runner = CliRunner()


def live_compensation(path: Path, feature_layer: str) -> Path:
    """A compensation for det with non-zero injections (as after training) on a small base network."""
    torch.manual_seed(0)
    compensation = SemanticCompensation(RSCConfig(blocks=1, embed_dim=32, vectors=8))
    for branch in compensation.branches.values():
        torch.nn.init.normal_(branch.blocks[0].inject.weight, std=0.5)
    save_compensation(compensation.eval(), VFN(VFNConfig(blocks=2)).eval(), path,
                      {"tasks": [{"task": "det", "feature_layer": feature_layer}]})
    return path


def test_det_export_matches_the_pytorch_path(family: Family, family_pt: Path, task_config: Path,
                                             tmp_path: Path) -> None:
    rsc, onnx_path = live_compensation(tmp_path / "rsc.safetensors", family.feature_layer), tmp_path / "det.onnx"
    args = ["export", "--task", "det", "--rsc", str(rsc), "--task-weights", str(family_pt), "--task-config",
            str(task_config), "-o", str(onnx_path)]
    # 48x64 letterboxes to the detector's 64x64 by padding (an RT-DETR: is enlarged to it); the graph is
    # fixed to that size.
    result = runner.invoke(app, [*args, "--height", "48", "--width", "64"])
    assert result.exit_code == 0, result.output
    assert float(re.search(r"max difference (\S+)", result.output).group(1)) <= 1e-4
    gen = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(3, 1, 48, 64, generator=gen), torch.rand(3, 3, 48, 64, generator=gen)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})
    compensation, base, _ = load_compensation(rsc)
    backend = load(TaskOptions(weights=family_pt, config=task_config))
    with torch.no_grad():
        expected = compensated_reference(base, compensation, backend)(ir, vis)
        base_only = FusionGraph(base)(ir, vis)
    assert np.abs(out - expected.numpy()).max() <= 1e-4
    assert np.abs(out - base_only.numpy()).max() > 1e-2  # the compensation is in the graph

    # Shrinking to 64 would need antialiased resizing, which ONNX cannot express: one clear line.
    result = runner.invoke(app, [*args, "--height", "96", "--width", "128", "--overwrite"])
    assert result.exit_code == 2 and "antialiasing" in result.output
    kept = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])  # the earlier graph stays
    assert np.array_equal(kept.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})[0], out)
    assert len(result.output.strip().splitlines()) == 1
