"""Exporting fusion to ONNX, colour handling included, checked with onnxruntime.

The graph takes what users have (an IR image and an RGB visible image, both in [0, 1]) and returns
the fused RGB image, so deployments need no cldyn code around it: the base network alone (any batch
and size), or compensated for a task, with the task network's layers up to its tapped feature.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import compensated_y, task_rgb
from cldyn_cli.models.rsc import A2SI, SemanticCompensation
from cldyn_cli.models.vfn import VFN, fold_batchnorm
from cldyn_cli.tasks import TappedNetwork, TaskBackend
from cldyn_cli.outputs import atomic_path

DEFAULT_OPSET = 17


class FusionGraph(nn.Module):
    """(IR (B,1,H,W), visible RGB (B,3,H,W)) -> fused RGB (B,3,H,W), as `cldyn fuse` computes it."""

    def __init__(self, base: VFN) -> None:
        super().__init__()
        self.base = fold_batchnorm(base)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return recombine(self.base(ir, luminance(vis)), vis)


class CompensatedFusionGraph(nn.Module):
    """(IR (B,1,H,W), visible RGB (B,3,H,W)) -> task-compensated fused RGB, as `cldyn fuse --task` computes it.

    Base fusion; the task network up to its tapped layer looks at that image; the base fusion again
    with the compensation injected into both encoders. A2SI runs in its static-shape formulation.
    """

    def __init__(self, base: VFN, compensation: SemanticCompensation, features: TappedNetwork) -> None:
        super().__init__()
        self.base = fold_batchnorm(base)
        self.compensation = copy.deepcopy(compensation).eval()
        for block in self.compensation.modules():
            if isinstance(block, A2SI):
                block.static_shapes, block.sample = True, False
        self.features = features.eval()

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        vis_y = luminance(vis)
        prior = self.base.prior(ir, vis_y)
        features = self.features(task_rgb(self.base(ir, vis_y, prior=prior), vis))
        return recombine(self.base(ir, vis_y, hook=self.compensation.hook(features), prior=prior), vis)


def compensated_reference(base: VFN, compensation: SemanticCompensation, task: TaskBackend
                          ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The PyTorch path that a compensated graph must reproduce (the one `cldyn fuse --task` takes)."""

    def fuse(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return recombine(compensated_y(base.eval(), compensation.eval(), task, ir, vis)[1], vis)

    return fuse


def require_packages(*names: str) -> None:
    """Refuse in one line when any of the packages ``names`` (onnx, onnxruntime) is not installed."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        hint = " (or pass --no-check)" if missing == ["onnxruntime"] else ""
        raise UserError(f"exporting needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
                        f"pip install 'cldyn[export]'{hint}")


def export_graph(graph: nn.Module, path: Path, opset: int = DEFAULT_OPSET, size: tuple[int, int] = (64, 80),
                 dynamic_size: bool = True) -> None:
    """Write ``graph`` (ir, vis -> fused) as ONNX traced at ``size``; batch dynamic, height and width too
    unless ``dynamic_size`` is False. A graph that cannot be exported is a UserError."""
    require_packages("onnx")
    example = (torch.rand(1, 1, *size), torch.rand(1, 3, *size))
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), _native_log_discarded():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        try:
            torch.onnx.export(graph.eval(), example, str(tmp), input_names=["ir", "vis"], output_names=["fused"],
                              dynamic_axes={"ir": axes, "vis": axes, "fused": axes}, opset_version=opset,
                              dynamo=False)
        except torch.onnx.errors.OnnxExporterError as exc:
            reason = str(exc).splitlines()[0]
            hint = ("the task network resizes images of this size with antialiasing, which ONNX cannot express: "
                    "pass --height/--width equal to its input size" if "_aa" in reason else "try another --opset")
            raise UserError(f"the graph cannot be exported with opset {opset} ({reason}); {hint}") from None


@contextlib.contextmanager
def _native_log_discarded() -> Iterator[None]:
    """Silence the exporter's C++ log, which prints the whole graph to stdout when an export fails."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(base: VFN, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``base`` (with colour handling) as an ONNX graph with dynamic batch, height and width."""
    export_graph(FusionGraph(base), path, opset)


def check_onnx(reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], path: Path, height: int = 75,
               width: int = 101, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and ``reference`` on a random batch of two pairs."""
    require_packages("onnxruntime")
    import onnxruntime

    gen = torch.Generator().manual_seed(seed)
    ir, vis = torch.rand(2, 1, height, width, generator=gen), torch.rand(2, 3, height, width, generator=gen)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})
    with torch.no_grad():
        expected = reference(ir, vis).cpu().numpy()
    return float(np.abs(out - expected).max())
