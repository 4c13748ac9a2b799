"""`cldyn export --task sod`: one ONNX graph with CTDNet's layers up to the tapped ``fuse23.bn_2``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import app
from cldyn_cli.export import FusionGraph, compensated_reference
from cldyn_cli.models.loading import load_compensation, load_vfn, save_compensation
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_ctdnet.backend import load

runner = CliRunner()


def test_sod_export_matches_the_pytorch_path(base_vfn: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    compensation = SemanticCompensation(RSCConfig(blocks=1, embed_dim=32, vectors=8))
    for branch in compensation.branches.values():
        torch.nn.init.normal_(branch.blocks[0].inject.weight, std=0.5)
    rsc, onnx_path, config = tmp_path / "rsc.safetensors", tmp_path / "sod.onnx", tmp_path / "sod.yaml"
    save_compensation(compensation.eval(), load_vfn(base_vfn)[0], rsc,
                      {"tasks": [{"task": "sod", "feature_layer": "fuse23.bn_2"}]})
    config.write_text("size: 64\n")
    # 48x64 is enlarged to CTDNet's 64x64 input (plain bilinear); the graph is fixed to that size.
    result = runner.invoke(app, ["export", "--task", "sod", "--rsc", str(rsc), "--task-config", str(config),
                                 "--height", "48", "--width", "64", "-o", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert float(re.search(r"max difference (\S+)", result.output).group(1)) <= 1e-4
    gen = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(3, 1, 48, 64, generator=gen), torch.rand(3, 3, 48, 64, generator=gen)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})
    compensation, base, _ = load_compensation(rsc)
    backend = load(TaskOptions(config=config))
    with torch.no_grad():
        expected = compensated_reference(base, compensation, backend)(ir, vis)
        base_only = FusionGraph(base)(ir, vis)
    assert np.abs(out - expected.numpy()).max() <= 1e-4
    assert np.abs(out - base_only.numpy()).max() > 1e-2  # the compensation is in the graph
