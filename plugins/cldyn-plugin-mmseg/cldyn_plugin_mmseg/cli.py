"""`cldyn mmseg ...`: train a small segmentor quickly; score fused images with MMSeg's IoU metric.

- ``cldyn mmseg train DATA -o seg.pth``: a short seeded training loop (see ``training.py``) on a
  split's visible images, or on other images named like them (``--images``, e.g. base-fused ones).
- ``cldyn mmseg eval FUSED [FUSED ...] --labels DIR``: mIoU, mAcc, aAcc and per-class IoU of the
  segmentor on one or more folders of fused images side by side (e.g. base vs compensated fusion).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Iterator, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from cldyn_cli.ui import Device, Quiet, TrustCheckpoint, progress, resolve_device, user_errors
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions

app = typer.Typer(help="MMSegmentation tools of the seg task: train a small segmentor, score fused images.",
                  no_args_is_help=True)

TaskWeights = Annotated[Optional[Path], typer.Option(help="Segmentor checkpoint (.pth; MMSeg/MMEngine format).")]
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
                                              "images": str(images) if images else None, "seed": seed})
    if not quiet:
        typer.echo(f"wrote {output} ({len(dataset)} images, {steps} steps, {len(resolved.classes)} classes, "
                   f"input {resolved.size[0]}x{resolved.size[1]})", err=True)


def _batches(dataset, on_item) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(len(dataset)):
        rgb, label, name = dataset[i]
        yield rgb[None], label[None]
        on_item(name)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


@app.command("eval")
@user_errors
def evaluate(
    fused: Annotated[list[Path], typer.Argument(help="Folder(s) of fused images, e.g. base and compensated.")],
    labels: Annotated[Path, typer.Option(help="Folder of class-index masks named like the images "
                                              "(e.g. DATA/test/Label).")],
    task_weights: TaskWeights = None,
    task_config: TaskConfig = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON.")] = None,
    device: Device = "auto",
    trust_checkpoint: TrustCheckpoint = False,
    quiet: Quiet = False,
) -> None:
    """Segmentation metrics (mIoU, mAcc, aAcc, per-class IoU) of a segmentor on fused images."""
    from cldyn_plugin_mmseg.backend import load
    from cldyn_plugin_mmseg.data import ImagesWithMasks

    if json_out is not None and json_out.is_dir():
        raise UserError(f"--json {json_out} is a folder; give a file name")
    backend = load(TaskOptions(task_weights, task_config, resolve_device(device), trust=trust_checkpoint))
    datasets = [ImagesWithMasks(folder, labels, backend.num_classes) for folder in fused]
    results = []
    with progress(quiet) as bar:
        for folder, dataset in zip(fused, datasets):
            job = bar.add_task(f"segmenting {folder.name}", total=len(dataset), status="")
            results.append(backend.evaluate(_batches(dataset, lambda name: bar.update(job, advance=1, status=name))))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"weights": str(task_weights) if task_weights else None, "config": backend.source,
               "size": list(backend.size), "classes": backend.classes,
               "results": [{"images": str(folder), "count": len(ds),
                            "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()}}
                           for folder, ds, metrics in zip(fused, datasets, results)]}
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
    table = Table(title=f"{task_weights or backend.source} on {labels}")
    table.add_column("metric")
    for folder, dataset in zip(fused, datasets):
        table.add_column(f"{folder.name} ({len(dataset)})", justify="right")
    for key in results[0]:
        table.add_row(key, *(_fmt(r[key]) for r in results))
    Console().print(table)
