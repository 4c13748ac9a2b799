"""`cldyn export`: the base or the task-compensated fusion network as an ONNX graph, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from cldyn_cli.api import load_task_compensation
from cldyn_cli.errors import UserError
from cldyn_cli.export import (DEFAULT_OPSET, CompensatedFusionGraph, FusionGraph, check_onnx,
                              compensated_reference, export_graph, require_packages)
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.outputs import atomic_path, check_new_files, check_writable
from cldyn_cli.tasks import TaskOptions
from cldyn_cli.ui import (FeatureLayer, Overwrite, Quiet, RSCFile, TaskConfig, TaskWeights, TrustCheckpoint,
                          check_compensation_args, user_errors)

TOLERANCE = 1e-4


@user_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.")],
    base: Annotated[Optional[Path], typer.Option(help="Base network checkpoint; default: the shipped model.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Export the fusion compensated for this task (needs --rsc); "
                                                "the graph includes the task network up to its tapped layer.")] = None,
    rsc: RSCFile = None,
    task_weights: TaskWeights = None,
    task_config: TaskConfig = None,
    feature_layer: FeatureLayer = None,
    height: Annotated[int, typer.Option(min=8, help="Image height the graph is traced (and, for tasks with a "
                                        "fixed input geometry, used) at.")] = 256,
    width: Annotated[int, typer.Option(min=8, help="Image width, likewise.")] = 320,
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset version.")] = DEFAULT_OPSET,
    check: Annotated[bool, typer.Option(help="Run the graph with onnxruntime and compare it with PyTorch.")] = True,
    trust_checkpoint: TrustCheckpoint = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Export fusion to ONNX: inputs `ir` (B,1,H,W) and `vis` (B,3,H,W) RGB in [0, 1],
    output `fused` (B,3,H,W) RGB.

    Colour is handled inside the graph as `cldyn fuse` does (BT.601 luminance fused, visible chroma
    kept). Without --task the base network is exported with dynamic batch, height and width. With
    --task NAME --rsc FILE the graph is the compensated network: base fusion, the task network up
    to its tapped layer, and the fusion again with the compensation (A2SI in a static-shape form).
    Its batch is dynamic; height and width are too unless the task network resizes or pads by the
    input size (then the graph takes --height x --width images only).
    """
    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'cldyn.onnx'}")
    check_writable(output, "--output")
    check_new_files([output], overwrite)
    require_packages("onnx", *(["onnxruntime"] if check else []))  # before any work
    check_compensation_args(task, rsc, base)
    if task is None:
        model, _ = load_vfn(base)
        graph = FusionGraph(model).eval()
        reference, dynamic_size = graph, True
    else:
        options = TaskOptions(task_weights, task_config, torch.device("cpu"), feature_layer, trust=trust_checkpoint)
        compensation, model, backend = load_task_compensation(task, rsc, options)
        features = backend.feature_network()
        graph = CompensatedFusionGraph(model, compensation, features)
        reference, dynamic_size = compensated_reference(model, compensation, backend), features.dynamic_size
    with atomic_path(output) as staged:  # checked before it replaces anything
        export_graph(graph, staged, opset, (height, width), dynamic_size)
        if check:
            size = (height + 11, width - 13) if dynamic_size else (height, width)
            diff = check_onnx(reference, staged, *size)
            if diff > TOLERANCE:
                raise UserError(f"the exported graph differs from PyTorch by {diff:.2e} (> {TOLERANCE}); "
                                "try another --opset")
    if not quiet:
        if check:
            typer.echo(f"checked with onnxruntime: max difference {diff:.1e}", err=True)
        typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
