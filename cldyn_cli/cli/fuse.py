"""`cldyn fuse`: fuse infrared/visible pairs with the base network (or with task compensation)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Callable, Optional

import numpy as np
import torch
import typer

from cldyn_cli.ui import (Device, MaxPixels, Overwrite, Quiet, TrustCheckpoint, progress, resolve_device,
                          user_errors)
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, read_image, read_infrared, set_max_pixels, write_png
from cldyn_cli.data.pairs import check_sizes, find_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.checkpoint import metadata_json
from cldyn_cli.colour import recombine
from cldyn_cli.fusion import Fuser, compensated_y, fuse_images, resize_to, to_array, to_tensor
from cldyn_cli.models.loading import load_compensation, load_vfn
from cldyn_cli.models.rsc import A2SI, SemanticCompensation
from cldyn_cli.models.vfn import VFN, with_stretch
from cldyn_cli.plugins import get_task
from cldyn_cli.tasks import TaskBackend, TaskOptions, TaskSpec
from cldyn_cli.outputs import all_or_nothing, check_output_dir


@user_errors
def fuse(
    ir: Annotated[Path, typer.Argument(help="Infrared image, or a folder of them (sub-folders included).")],
    vis: Annotated[Path, typer.Argument(help="Visible image, or a folder whose files match IR's by name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the fused PNGs (one per pair, "
                                         "named after the visible file).")],
    base: Annotated[Optional[Path], typer.Option(help="Base network checkpoint (.safetensors from "
                                                 "`cldyn train-base`); default: the model shipped with cldyn.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Downstream task to compensate for (see `cldyn plugins`); "
                                                "needs --rsc.")] = None,
    rsc: Annotated[Optional[Path], typer.Option(help="Compensation from `cldyn compensate` (it carries its base "
                                                "network).")] = None,
    task_weights: Annotated[Optional[Path], typer.Option(help="The task network's weights.")] = None,
    task_config: Annotated[Optional[Path], typer.Option(help="The task network's config file.")] = None,
    feature_layer: Annotated[Optional[str], typer.Option(help="Task-network layer to tap (default: the one the "
                                                         "compensation was trained with).")] = None,
    sample: Annotated[bool, typer.Option(help="Sample the kernel types (Gumbel) instead of taking the most "
                                         "likely; with --seed for repeatability.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed for --sample.")] = 0,
    tile: Annotated[Optional[int], typer.Option(min=64, help="Fuse tile by tile with this core size in pixels "
                                                "(exact, seamless). Default: automatic above 2048x2048.")] = None,
    stretch: Annotated[Optional[bool], typer.Option("--stretch/--no-stretch", help="Stretch each fused image "
                                                    "to the full grey range, or not (default: as the base "
                                                    "model was trained).")] = None,
    resize: Annotated[bool, typer.Option(help="Resize infrared to the visible size when they differ "
                                         "(otherwise a size mismatch is an error).")] = False,
    device: Device = "auto",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    trust_checkpoint: TrustCheckpoint = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Fuse infrared and visible images into one image per pair.

    Only luminance is fused; colour comes from the visible image (a grayscale visible image gives a
    grayscale result). Outputs have the visible image's size and appear only when every pair succeeded.
    """
    if (task is None) != (rsc is None):
        raise UserError("--task and --rsc go together: the compensation (--rsc) is conditioned on the task network")
    if task is not None and base is not None:
        raise UserError("--base cannot be combined with --rsc: the compensation file carries the base it was "
                        "trained with")
    set_max_pixels(max_pixels)
    pairs = find_pairs(ir, vis)
    if not resize:
        check_sizes(pairs)
    dev = resolve_device(device)
    with all_or_nothing(output) as stage, progress(quiet) as bar:  # the output folder is locked from here on
        check_output_dir(output, [p.name for p in pairs], ".png", overwrite)
        if task is None:
            fuse_one = base_fusion(Fuser(with_stretch(load_vfn(base)[0], stretch), dev, tile))
        else:
            options = TaskOptions(task_weights, task_config, dev, feature_layer, trust_checkpoint)
            fuse_one = task_fusion(task, rsc, options, sample, seed, stretch)
        job = bar.add_task("fusing", total=len(pairs), status="")
        for pair in pairs:
            vis_img = read_image(pair.vis)
            ir_img = resize_to(read_infrared(pair.ir), *vis_img.shape[:2]) if resize else read_infrared(pair.ir)
            if ir_img.shape[:2] != vis_img.shape[:2]:
                raise UserError(f"size mismatch for {pair.name!r}; pass --resize")
            write_png(fuse_one(ir_img, vis_img), stage / f"{pair.name}.png")
            bar.update(job, advance=1, status=pair.name)
    if not quiet:
        typer.echo(f"wrote {len(pairs)} fused image(s) to {output}", err=True)


def base_fusion(fuser: Fuser) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda ir, vis: fuse_images(fuser, ir, vis)


def task_fusion(task: str, rsc: Path, options: TaskOptions, sample: bool, seed: int, stretch: Optional[bool] = None
                ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Fusion compensated for ``task``: the loaded compensation, its base and the task network."""
    compensation, base, backend = load_task_compensation(task, rsc, options)
    base = with_stretch(base, stretch)
    for block in compensation.modules():
        if isinstance(block, A2SI):
            block.sample = sample
    torch.manual_seed(seed)

    @torch.no_grad()
    def fuse_one(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        vis_t = to_tensor(vis).to(options.device)
        _, fused_y = compensated_y(base, compensation, backend, to_tensor(ir).to(options.device), vis_t)
        return to_array(recombine(fused_y.float(), vis_t).cpu())

    return fuse_one


def load_task_compensation(task: str, rsc: Path, options: TaskOptions
                           ) -> tuple[SemanticCompensation, VFN, TaskBackend]:
    """The compensation in ``rsc``, its base network, and the task network tapped where it was trained."""
    spec = get_task(task)
    compensation, base, metadata = load_compensation(rsc, options.device)
    trained_for = {t.get("task"): t for t in metadata_json(metadata, "tasks", rsc)}
    if spec.name not in trained_for:
        typer.echo(f"warning: {rsc} was trained for {', '.join(map(str, trained_for))}, not {spec.name}", err=True)
    backend = _load_backend(spec, options, trained_for.get(spec.name, {}).get("feature_layer"), rsc)
    return compensation, base, backend


def _load_backend(spec: TaskSpec, options: TaskOptions, trained_layer: Optional[str], rsc: Path) -> TaskBackend:
    """The task network, tapped where the compensation was trained unless told otherwise.

    A different architecture (cross-detector use) may lack that layer: then the task's default.
    """
    if options.feature_layer is not None or trained_layer is None:
        return spec.load(options)
    try:
        return spec.load(replace(options, feature_layer=trained_layer))
    except UserError:
        typer.echo(f"warning: this task network has no layer {trained_layer!r}, which {rsc} was trained with; "
                   "using the task's default layer", err=True)
        return spec.load(options)


def register(app: typer.Typer) -> None:
    app.command("fuse")(fuse)
