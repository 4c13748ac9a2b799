"""Exporting the base fusion network to ONNX, colour handling included, checked with onnxruntime.

The graph takes what users have (an IR image and an RGB visible image, both in [0, 1], any batch
and size) and returns the fused RGB image, so deployments need no cldyn code around it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.errors import UserError
from cldyn_cli.models.vfn import VFN, fold_batchnorm
from cldyn_cli.outputs import atomic_path

DEFAULT_OPSET = 17


class FusionGraph(nn.Module):
    """(IR (B,1,H,W), visible RGB (B,3,H,W)) -> fused RGB (B,3,H,W), as `cldyn fuse` computes it."""

    def __init__(self, base: VFN) -> None:
        super().__init__()
        self.base = fold_batchnorm(base)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return recombine(self.base(ir, luminance(vis)), vis)


def export_onnx(base: VFN, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``base`` (with colour handling) as an ONNX graph with dynamic batch, height and width."""
    if importlib.util.find_spec("onnx") is None:
        raise UserError("exporting needs the onnx package: pip install 'cldyn[export]'")
    graph = FusionGraph(base).eval()
    example = (torch.rand(1, 1, 64, 80), torch.rand(1, 3, 64, 80))
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(graph, example, str(tmp), input_names=["ir", "vis"], output_names=["fused"],
                          dynamic_axes={"ir": axes, "vis": axes, "fused": axes}, opset_version=opset,
                          dynamo=False)


def check_onnx(base: VFN, path: Path, height: int = 75, width: int = 101, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and PyTorch on a random pair of another size."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("checking the export needs onnxruntime: pip install 'cldyn[export]' "
                        "(or pass --no-check)") from None
    gen = torch.Generator().manual_seed(seed)
    ir, vis = torch.rand(2, 1, height, width, generator=gen), torch.rand(2, 3, height, width, generator=gen)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})
    with torch.no_grad():
        expected = FusionGraph(base).eval()(ir, vis).numpy()
    return float(np.abs(out - expected).max())
