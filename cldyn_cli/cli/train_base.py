"""`cldyn train-base`: train the base fusion network on infrared/visible pairs."""

from __future__ import annotations

import datetime
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.ui import Device, MaxPixels, Overwrite, Quiet, default_of, progress, resolve_device, user_errors
from cldyn_cli.config import load_config
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from cldyn_cli.data.pairs import find_dataset_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.checkpoint import check_run_files, resumed_step, source_commit, train_state_path
from cldyn_cli.training.base import TrainBaseConfig, train_base, usable_crop
from cldyn_cli.training.distributed import process_group
from cldyn_cli.training.log import StepLog, default_log_path


@user_errors
def train_base_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder: ir/ + vis/ (or vi/, with optional train/test "
                                         "sub-folders), split/Infrared + split/Visible, or Split/T + Split/RGB.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the trained model (.safetensors).")],
    config: Annotated[Optional[Path], typer.Option(help="YAML file with any of the options below; flags "
                                                   "given on the command line win.")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Optimiser steps (overrides --epochs).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Passes over the data.",
                                                  show_default=default_of(TrainBaseConfig, "epochs"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Crops per step.",
                                                      show_default=default_of(TrainBaseConfig, "batch_size"))] = None,
    crop: Annotated[Optional[int], typer.Option(min=16, help="Random square crop size.",
                                                show_default=default_of(TrainBaseConfig, "crop"))] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Adam learning rate.",
                                                show_default=default_of(TrainBaseConfig, "lr"))] = None,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="CB blocks L per encoder/decoder.",
                                                  show_default=default_of(TrainBaseConfig, "blocks"))] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.",
                                                show_default=default_of(TrainBaseConfig, "seed"))] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        min=1, help="Save the resumable state every N steps.",
        show_default=default_of(TrainBaseConfig, "checkpoint_every"))] = None,
    intensity_weight: Annotated[Optional[float], typer.Option(
        min=0.0, help="Weight of the L1 intensity term toward max(IR, Y).",
        show_default=default_of(TrainBaseConfig, "intensity_weight"))] = None,
    gradient_weight: Annotated[Optional[float], typer.Option(
        min=0.0, help="Weight of the L1 texture term toward the sharper source (see --gradient-target).",
        show_default=default_of(TrainBaseConfig, "gradient_weight"))] = None,
    gradient_target: Annotated[Optional[str], typer.Option(
        help="What the texture term compares: sobel_max (the paper's: Sobel magnitudes against the larger "
        "source's) or selected (signed pixel differences against the locally sharper source's).",
        show_default=default_of(TrainBaseConfig, "gradient_target"))] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(
        help="constant (the paper's) or cosine (decays to 0 by the last step).",
        show_default=default_of(TrainBaseConfig, "lr_schedule"))] = None,
    stretch: Annotated[Optional[bool], typer.Option(
        "--stretch/--no-stretch", help="Whether the saved model stretches each fused image to the full grey "
        "range.", show_default="no-stretch")] = None,
    stretch_clip: Annotated[Optional[float], typer.Option(
        min=0.0, max=0.49, help="Fraction of pixels the stretch may saturate at each end, so that a few "
        "outliers cannot cancel it.", show_default=default_of(TrainBaseConfig, "stretch_clip"))] = None,
    residual: Annotated[Optional[bool], typer.Option(
        "--residual/--no-residual", help="Let the network predict a correction to a prior image (--prior) "
        "instead of the fused image itself.", show_default="no-residual")] = None,
    prior: Annotated[Optional[str], typer.Option(
        help="What a --residual network corrects: 'max', the brighter source, or 'poisson', the image whose "
        "pixel differences follow the locally sharper source (a global solve, for large-scale contrast).",
        show_default=default_of(TrainBaseConfig, "prior"))] = None,
    log: Annotated[Optional[Path], typer.Option(help="CSV of the loss per step.",
                                                show_default="OUTPUT with .log.csv")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT's .train-state.safetensors.")] = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Train the base fusion network (VFN) with the loss of docs/method.md.

    The resumable state (model, optimiser, step, random state) is saved next to OUTPUT every
    --checkpoint-every steps; --resume continues from it and ends where an uninterrupted run would.
    Under `torchrun --nproc-per-node N` it trains data-parallel: --batch-size is the global batch.
    Cost on a 2-core CPU: 20-40 s per default step (16 crops of 256x256, L = 4), about 1.6 s with
    --crop 128 --batch-size 8; use a GPU (--device cuda) for full runs.
    """
    cfg = load_config(TrainBaseConfig, config, dict(steps=steps, epochs=epochs, batch_size=batch_size, crop=crop,
                                                    lr=lr, blocks=blocks, seed=seed, checkpoint_every=checkpoint_every,
                                                    intensity_weight=intensity_weight, gradient_weight=gradient_weight,
                                                    gradient_target=gradient_target,
                                                    lr_schedule=lr_schedule, stretch=stretch, stretch_clip=stretch_clip,
                                                    residual=residual, prior=prior))
    if output.exists() and output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'base.safetensors'}")
    log_path = log or default_log_path(output)
    check_run_files(output, log_path, resume, overwrite)
    set_max_pixels(max_pixels)
    pairs = find_dataset_pairs(data)
    fitted = usable_crop(pairs, cfg.crop)
    if fitted != cfg.crop:
        typer.echo(f"note: crop {cfg.crop} exceeds the smallest image; using {fitted}", err=True)
        cfg = replace(cfg, crop=fitted)
    total = cfg.total_steps(len(pairs))
    commit = source_commit()  # the code as the run starts (files edited during a long run do not count)
    resumed_at = resumed_step(output, resume)
    log_rows = StepLog(log_path, ["step", "loss"], resumed_at if resume else None)
    with process_group(resolve_device(device)) as (ranks, dev):
        quiet = quiet or not ranks.is_main
        with progress(quiet) as bar:
            job = bar.add_task("training", total=total, completed=resumed_at, status="")

            def on_step(step: int, _total: int, loss: float) -> None:
                log_rows.add([{"step": step, "loss": loss}])
                bar.update(job, completed=step, status=f"loss {loss:.4f}")

            model = train_base(pairs, output, cfg, dev, resume=resume, on_step=on_step, ranks=ranks,
                               on_checkpoint=lambda _step: log_rows.write())  # called on rank 0 alone
    if not ranks.is_main:
        return
    provenance = {"data": str(data), "pairs": len(pairs), "steps": total, "seed": cfg.seed,
                  "train_config": asdict(cfg), "world_size": ranks.world_size, "git_commit": commit,
                  "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    save_vfn(model.cpu(), output, provenance)
    if not quiet:
        typer.echo(f"wrote {output} and {log_path} (resumable state: {train_state_path(output)})", err=True)


def register(app: typer.Typer) -> None:
    app.command("train-base")(train_base_command)
