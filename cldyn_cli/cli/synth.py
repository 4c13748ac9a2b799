"""`cldyn synth`: write a deterministic synthetic infrared/visible dataset with labels.

Real datasets cannot be downloaded everywhere; these scenes let users try every command, and
tests and task plugins run on them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.ui import MaxPixels, Quiet, Seed, progress, user_errors
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, check_pixels, set_max_pixels
from cldyn_cli.data.synth import DET_CLASSES, LAYOUTS, MIN_SIZE, SceneOptions, write_dataset
from cldyn_cli.errors import UserError
from cldyn_cli.outputs import check_writable

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """'People,Car' -> (1, 2): M3FD class names, any case, to segmentation indices (None: all)."""
    if text is None:
        return None
    by_name = {name.lower(): i + 1 for i, name in enumerate(DET_CLASSES)}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown or not names:
        raise UserError(f"--classes {text!r}: use comma-separated names from {', '.join(DET_CLASSES)}")
    return tuple(sorted({by_name[n.lower()] for n in names}))


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); anything else is a user error naming the expected form."""
    match = _SIZE.match(text)
    if match is None:
        raise UserError(f"--size must look like 640x480 (width x height), got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < MIN_SIZE or height < MIN_SIZE:
        raise UserError(f"--size {width}x{height} is too small; use at least {MIN_SIZE}x{MIN_SIZE}")
    return width, height


@user_errors
def synth(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the dataset into (created if missing; "
                                        "files of the same name are replaced).")],
    n: Annotated[int, typer.Option("--n", "-n", help="Number of scenes (image pairs) to write.")] = 8,
    size: Annotated[str, typer.Option(metavar="WxH", help="Image size as WIDTHxHEIGHT, e.g. 640x480 "
                                      f"(at least {MIN_SIZE}x{MIN_SIZE}).")] = "320x256",
    seed: Seed = 0,
    layout: Annotated[str, typer.Option(metavar="|".join(LAYOUTS), help=(
        "Folder layout: pairs = ir/ vis/ labels/ masks/ saliency/; "
        "m3fd = ir|vi|labels/{train,test} (YOLO detection); "
        "fmb = {train,test}/{Infrared,Visible,Label} (segmentation); "
        "vt5000 = {Train,Test}/{RGB,T,GT} (salient objects). "
        "Split layouts put every fifth scene in test."))] = "pairs",
    classes: Annotated[Optional[str], typer.Option(metavar="NAMES", help=(
        "Draw only these object classes, comma-separated (e.g. People,Car); label ids stay M3FD's."),
        show_default="all six")] = None,
    min_object_height: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "Smallest object height as a fraction of the image height (0: the natural mix, mostly small "
        "objects). Larger objects and fewer classes make a detector trained briefly from scratch useful."))] = 0.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Write synthetic street scenes: infrared and visible images plus labels.

    Objects (people, cars, buses, motorcycles, lamps, trucks) are warm in infrared and of varying
    visibility by day, dusk, night and fog; texture, markings and signs appear only in visible light.
    Scene i depends only on the seed and i, so the same command writes identical files and a
    smaller --n writes a prefix of a larger one.
    """
    width, height = parse_size(size)
    set_max_pixels(max_pixels)
    check_pixels(width, height, "--size")
    if layout not in LAYOUTS:
        raise UserError(f"unknown --layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if seed < 0:
        raise UserError(f"--seed must be at least 0, got {seed}")
    options = SceneOptions(parse_classes(classes), min_object_height)
    check_writable(out, "output", is_folder=True)
    with progress(quiet) as bar:
        job = bar.add_task("synthesising", total=n, status="")
        write_dataset(out, n, width, height, seed, layout,
                      progress=lambda done: bar.update(job, completed=done, status=f"{done - 1:05d}"), options=options)
    if not quiet:
        typer.echo(f"wrote {n} scene(s) of {width}x{height} in layout {layout!r} to {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
