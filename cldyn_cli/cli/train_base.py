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
from cldyn_cli.checkpoint import existing_train_state, train_state_path
from cldyn_cli.training.base import TrainBaseConfig, train_base, usable_crop


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
    resume: Annotated[bool, typer.Option(help="Continue from OUTPUT's .train-state.safetensors.")] = False,
    device: Device = "auto",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Train the base fusion network (VFN) with METHOD.md's loss.

    The resumable state (model, optimiser, step, random state) is saved next to OUTPUT every
    --checkpoint-every steps; --resume continues from it and ends where an uninterrupted run would.
    """
    cfg = load_config(TrainBaseConfig, config, dict(steps=steps, epochs=epochs, batch_size=batch_size, crop=crop,
                                                    lr=lr, blocks=blocks, seed=seed, checkpoint_every=checkpoint_every))
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
    dev = resolve_device(device)
    total = cfg.total_steps(len(pairs))
    with progress(quiet) as bar:
        job = bar.add_task("training", total=total, status="")

        def on_step(step: int, _total: int, loss: float) -> None:
            bar.update(job, completed=step, status=f"loss {loss:.4f}")

        model = train_base(pairs, output, cfg, dev, resume=resume, on_step=on_step)
    provenance = {"data": str(data), "pairs": len(pairs), "steps": total, "seed": cfg.seed,
                  "train_config": asdict(cfg), "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    save_vfn(model.cpu(), output, provenance)
    if not quiet:
        typer.echo(f"wrote {output} (resumable state: {train_state_path(output)})", err=True)


def register(app: typer.Typer) -> None:
    app.command("train-base")(train_base_command)
