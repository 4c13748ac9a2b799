"""`cldyn fuse`: fuse infrared/visible pairs with the base network (or with task compensation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.cli.common import Device, Overwrite, Quiet, progress, resolve_device, user_errors
from cldyn_cli.data.images import read_image, read_infrared, write_png
from cldyn_cli.data.pairs import check_sizes, find_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import Fuser, fuse_images, resize_to
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.outputs import all_or_nothing, check_output_dir


@user_errors
def fuse(
    ir: Annotated[Path, typer.Argument(help="Infrared image, or a folder of them (sub-folders included).")],
    vis: Annotated[Path, typer.Argument(help="Visible image, or a folder whose files match IR's by name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the fused PNGs (one per pair, "
                                         "named after the visible file).")],
    base: Annotated[Optional[Path], typer.Option(help="Base network checkpoint (.safetensors from "
                                                 "`cldyn train-base`); default: the model shipped with cldyn.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Downstream task to compensate for (see `cldyn plugins`).")] = None,
    tile: Annotated[Optional[int], typer.Option(min=64, help="Fuse tile by tile with this core size in pixels "
                                                "(exact, seamless). Default: automatic above 2048x2048.")] = None,
    resize: Annotated[bool, typer.Option(help="Resize infrared to the visible size when they differ "
                                         "(otherwise a size mismatch is an error).")] = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Fuse infrared and visible images into one image per pair.

    Only luminance is fused; colour comes from the visible image (a grayscale visible image gives a
    grayscale result). Outputs have the visible image's size and appear only when every pair succeeded.
    """
    if task is not None:
        raise UserError(f"unknown task {task!r}: no task plugins are available yet; run without --task")
    pairs = find_pairs(ir, vis)
    if not resize:
        check_sizes(pairs)
    check_output_dir(output, [p.name for p in pairs], ".png", overwrite)
    model, _ = load_vfn(base)
    fuser = Fuser(model, resolve_device(device), tile)
    with all_or_nothing(output) as stage, progress(quiet) as bar:
        job = bar.add_task("fusing", total=len(pairs), status="")
        for pair in pairs:
            vis_img = read_image(pair.vis)
            ir_img = resize_to(read_infrared(pair.ir), *vis_img.shape[:2]) if resize else read_infrared(pair.ir)
            if ir_img.shape[:2] != vis_img.shape[:2]:
                raise UserError(f"size mismatch for {pair.name!r}; pass --resize")
            write_png(fuse_images(fuser, ir_img, vis_img), stage / f"{pair.name}.png")
            bar.update(job, advance=1, status=pair.name)
    if not quiet:
        typer.echo(f"wrote {len(pairs)} fused image(s) to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("fuse")(fuse)
