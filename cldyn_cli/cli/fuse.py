"""`cldyn fuse`: fuse infrared/visible pairs with the base network (or with task compensation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.api import Fuser
from cldyn_cli.ui import (Device, FeatureLayer, MaxPixels, Overwrite, Quiet, RSCFile, TaskConfig, TaskWeights,
                          TrustCheckpoint, check_compensation_args, progress, user_errors)
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, read_image, read_infrared, set_max_pixels, write_png
from cldyn_cli.data.pairs import check_sizes, find_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import resize_to
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
    rsc: RSCFile = None,
    task_weights: TaskWeights = None,
    task_config: TaskConfig = None,
    feature_layer: FeatureLayer = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample the kernel types (Gumbel) instead of taking the most "
                                         "likely; with --seed for repeatability.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed for --sample.")] = 0,
    tile: Annotated[Optional[int], typer.Option(min=64, help="Fuse tile by tile with this core size in pixels "
                                                "(exact, seamless). Default: automatic above 2048x2048.")] = None,
    stretch: Annotated[Optional[bool], typer.Option("--stretch/--no-stretch", help="Stretch each fused image "
                                                    "to the full grey range, or not.",
                                                    show_default="as the base model was trained")] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize infrared to the visible size when they differ "
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
    check_compensation_args(task, rsc, base)
    set_max_pixels(max_pixels)
    pairs = find_pairs(ir, vis)
    if not resize:
        check_sizes(pairs)
    with all_or_nothing(output) as stage, progress(quiet) as bar:  # the output folder is locked from here on
        check_output_dir(output, [p.name for p in pairs], ".png", overwrite)
        fuser = Fuser(base, rsc=rsc, task=task, task_weights=task_weights, task_config=task_config,
                      feature_layer=feature_layer, device=device, tile=tile, sample=sample, seed=seed, stretch=stretch,
                      trust_checkpoint=trust_checkpoint)
        job = bar.add_task("fusing", total=len(pairs), status="")
        for pair in pairs:
            vis_img = read_image(pair.vis)
            ir_img = resize_to(read_infrared(pair.ir), *vis_img.shape[:2]) if resize else read_infrared(pair.ir)
            if ir_img.shape[:2] != vis_img.shape[:2]:
                raise UserError(f"size mismatch for {pair.name!r}; pass --resize")
            write_png(fuser.fuse_float(ir_img, vis_img), stage / f"{pair.name}.png")
            bar.update(job, advance=1, status=pair.name)
    if not quiet:
        typer.echo(f"wrote {len(pairs)} fused image(s) to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("fuse")(fuse)
