"""`cldyn train-base`: train the base fusion network on infrared/visible pairs."""

from __future__ import annotations

import datetime
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.ui import Device, MaxPixels, Quiet, progress, resolve_device, user_errors
from cldyn_cli.config import load_config
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from cldyn_cli.outputs import check_writable
from cldyn_cli.data.pairs import find_dataset_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.checkpoint import existing_train_state, source_commit, train_state_path
from cldyn_cli.training.base import TrainBaseConfig, train_base, usable_crop
from cldyn_cli.training.distributed import process_group


@user_errors
def train_base_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder: ir/ + vis/ (or vi/, with optional train/test "
                                         "sub-folders), split/Infrared + split/Visible, or Split/T + Split/RGB.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the trained model (.safetensors).")],
    config: Annotated[Optional[Path], typer.Option(help="YAML file with any of the options below; flags "
                                                   "given on the command line win.")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Optimiser steps (overrides --epochs).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Passes over the data [default: 100].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Crops per step [default: 16].")] = None,
    crop: Annotated[Optional[int], typer.Option(min=16, help="Random square crop size [default: 256].")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Adam learning rate [default: 1e-3].")] = None,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="CB blocks L per encoder/decoder [default: 4].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed [default: 0].")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, help="Save the resumable state every N "
                                                            "steps [default: 200].")] = None,
    intensity_weight: Annotated[Optional[float], typer.Option(min=0.0, help="Weight of the L1 intensity term "
                                                              "toward max(IR, Y) [default: 0.2].")] = None,
    gradient_weight: Annotated[Optional[float], typer.Option(min=0.0, help="Weight of the L1 Sobel-texture term "
                                                             "toward the sharper source [default: 1.0].")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="constant (the paper's) or cosine (decays to 0 "
                                                       "by the last step) [default: constant].")] = None,
    stretch: Annotated[Optional[bool], typer.Option("--stretch/--no-stretch", help="Whether the saved model "
                                                    "stretches each fused image to the full grey range "
                                                    "[default: no-stretch].")] = None,
    stretch_clip: Annotated[Optional[float], typer.Option(min=0.0, max=0.49, help="Fraction of pixels the "
                                                          "stretch may saturate at each end, so that a few "
                                                          "outliers cannot cancel it [default: 0].")] = None,
    residual: Annotated[Optional[bool], typer.Option("--residual/--no-residual", help="Let the network predict "
                                                     "a correction to the brighter source, max(IR, Y), instead "
                                                     "of the fused image itself [default: no-residual].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUTPUT's .train-state.safetensors.")] = False,
    device: Device = "auto",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Train the base fusion network (VFN) with METHOD.md's loss.

    The resumable state (model, optimiser, step, random state) is saved next to OUTPUT every
    --checkpoint-every steps; --resume continues from it and ends where an uninterrupted run would.
    Under `torchrun --nproc-per-node N` it trains data-parallel: --batch-size is the global batch.
    """
    cfg = load_config(TrainBaseConfig, config, dict(steps=steps, epochs=epochs, batch_size=batch_size, crop=crop,
                                                    lr=lr, blocks=blocks, seed=seed, checkpoint_every=checkpoint_every,
                                                    intensity_weight=intensity_weight, gradient_weight=gradient_weight,
                                                    lr_schedule=lr_schedule, stretch=stretch, stretch_clip=stretch_clip,
                                                    residual=residual))
    if output.exists() and output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'base.safetensors'}")
    check_writable(output, "--output")
    check_writable(train_state_path(output), "training state")
    if resume:
        existing_train_state(output)  # refused before the data is read
    set_max_pixels(max_pixels)
    pairs = find_dataset_pairs(data)
    fitted = usable_crop(pairs, cfg.crop)
    if fitted != cfg.crop:
        typer.echo(f"note: crop {cfg.crop} exceeds the smallest image; using {fitted}", err=True)
        cfg = replace(cfg, crop=fitted)
    total = cfg.total_steps(len(pairs))
    with process_group(resolve_device(device)) as (ranks, dev):
        quiet = quiet or not ranks.is_main
        with progress(quiet) as bar:
            job = bar.add_task("training", total=total, status="")

            def on_step(step: int, _total: int, loss: float) -> None:
                bar.update(job, completed=step, status=f"loss {loss:.4f}")

            model = train_base(pairs, output, cfg, dev, resume=resume, on_step=on_step, ranks=ranks)
    if not ranks.is_main:
        return
    provenance = {"data": str(data), "pairs": len(pairs), "steps": total, "seed": cfg.seed,
                  "train_config": asdict(cfg), "world_size": ranks.world_size, "git_commit": source_commit(),
                  "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    save_vfn(model.cpu(), output, provenance)
    if not quiet:
        typer.echo(f"wrote {output} (resumable state: {train_state_path(output)})", err=True)


def register(app: typer.Typer) -> None:
    app.command("train-base")(train_base_command)
