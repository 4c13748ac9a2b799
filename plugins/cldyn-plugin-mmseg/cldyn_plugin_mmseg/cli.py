"""`cldyn mmseg train`: train a small segmentor quickly.

``cldyn mmseg train DATA -o seg.pth`` runs a short seeded training loop (see ``training.py``) on a
split's visible images, or on other images named like them (``--images``, e.g. base-fused ones).
Fused images are scored by ``cldyn eval --task seg`` (mIoU, mAcc, aAcc and per-class IoU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.plugin_api import (Device, Quiet, TrustCheckpoint, UserError, plugin_versions, progress, resolve_device,
                                  user_errors)

app = typer.Typer(help="MMSegmentation tools of the seg task: train a small segmentor (score fused images with "
                       "`cldyn eval --task seg`).",
                  no_args_is_help=True)

TaskConfig = Annotated[Optional[Path], typer.Option(help="MMSeg config (.py or mmseg::path) or a cldyn YAML "
                                                         "(config, classes, num_classes, size, cfg_options).")]


@app.command("train")
@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="Dataset root: FMB ({split}/Infrared,Visible,Label) or "
                                              "ir/ vis/ masks/ folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the checkpoint (.pth).")],
    task_config: TaskConfig = None,
    task_weights: Annotated[Optional[Path], typer.Option(help="Start from these weights (fine-tuning).")] = None,
    split: Annotated[str, typer.Option(help="Split to train on.")] = "train",
    images: Annotated[Optional[Path], typer.Option(help="Train on these images instead of the visible ones "
                                                        "(named like the masks, e.g. base-fused images).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 300,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW peak learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, order, flips).")] = 0,
    device: Device = "auto",
    trust_checkpoint: TrustCheckpoint = False,
    quiet: Quiet = False,
) -> None:
    """Train an MMSeg segmentor from its config on a segmentation dataset (short loop, seeded)."""
    from dataclasses import replace

    from cldyn_plugin_mmseg.config import resolve
    from cldyn_plugin_mmseg.data import ImagesWithMasks, find_layout
    from cldyn_plugin_mmseg.model import build_segmentor
    from cldyn_plugin_mmseg.training import TrainSettings, save_checkpoint, train_segmentor

    if output.suffix.lower() not in (".pth", ".pt"):
        raise UserError(f"--output {output} must end in .pth (an MMSeg checkpoint)")
    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'segformer.pth'}")
    dev = resolve_device(device)
    resolved = resolve(task_config, task_weights, trust_checkpoint)
    resolved = replace(resolved, seed=seed)
    _, vis, masks = find_layout(data, split)
    dataset = ImagesWithMasks(images or vis, masks, len(resolved.classes))
    model = build_segmentor(resolved)
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    with progress(quiet) as bar:
        job = bar.add_task("training", total=steps, status="")
        state = train_segmentor(model, resolved, dataset, settings, dev,
                                lambda step, loss: bar.update(job, completed=step, status=f"loss {loss:.3f}"))
    save_checkpoint(output, state, resolved, {"steps": steps, "data": str(data), "split": split,
                                              "images": str(images) if images else None, "seed": seed,
                                              "plugins": plugin_versions()})
    if not quiet:
        typer.echo(f"wrote {output} ({len(dataset)} images, {steps} steps, {len(resolved.classes)} classes, "
                   f"input {resolved.size[0]}x{resolved.size[1]})", err=True)
