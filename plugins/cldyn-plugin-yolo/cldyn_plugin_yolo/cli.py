"""`cldyn yolo ...`: train a detector with Ultralytics' own trainer, offline; score fused images.

- ``cldyn yolo train DATA.yaml -o best.pt``: ``YOLO(model).train(...)`` with plots, AMP checks and
  everything that could reach the network switched off, runs under ``$CLDYN_YOLO_DIR/runs/train``.
- ``cldyn yolo eval FUSED --labels DIR --task-weights best.pt``: mAP@0.5, mAP@0.5:0.95 and per-class
  AP of a detector on a folder of fused images (any detector: the one the compensation was trained
  with, or another one for the cross-detector check).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Annotated, Iterator, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from cldyn_cli.plugin_api import (Device, Quiet, TaskOptions, UserError, atomic_path, progress, resolve_device,
                                  user_errors)

app = typer.Typer(help="Ultralytics YOLO tools of the det task: train a detector offline, score fused images.",
                  no_args_is_help=True)


def _ultralytics_device(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu"
    return str(device.index or 0)


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


_OPTION_KEYS = {"epochs", "imgsz", "batch", "seed", "workers", "patience", "device"}  # options of this command
_MANAGED_KEYS = {"data", "model", "project", "name", "exist_ok", "mode", "task", "resume"}


def _train_settings(items: list[str]) -> dict[str, object]:
    """``--set key=value`` pairs (values read as YAML: numbers, booleans, lists), checked against
    Ultralytics' argument names."""
    import yaml

    from cldyn_plugin_yolo._env import ultralytics_ready

    ultralytics_ready()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr0=0.01")
        if key in _OPTION_KEYS:
            raise UserError(f"--set {key}=...: use the --{key} option of this command instead")
        if key in _MANAGED_KEYS:
            raise UserError(f"--set {key}=...: cldyn yolo train sets this itself")
        if key not in DEFAULT_CFG_DICT:
            raise UserError(f"--set {key}=...: not an Ultralytics training argument (see ultralytics/cfg/default.yaml)")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


@app.command("train")
@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="Ultralytics dataset YAML (path: absolute, train:, val:, names:).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to copy the best weights (.pt).")],
    model: Annotated[str, typer.Option(help="Model YAML (e.g. yolov8n.yaml, yolo11n.yaml: trained from scratch) "
                                       "or a local .pt to fine-tune.")] = "yolov8n.yaml",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 10,
    imgsz: Annotated[int, typer.Option(min=32, help="Training image size (a multiple of 32).")] = 320,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (Ultralytics' deterministic mode).")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading worker processes.")] = 0,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without improvement.")] = 100,
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Any other Ultralytics training argument, e.g. --set lr0=0.01 "
        "--set mosaic=0.5 (repeatable).")] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train an Ultralytics detector on a YOLO dataset with Ultralytics' own trainer, fully offline."""
    from cldyn_plugin_yolo._env import runs_dir, ultralytics_ready

    if not data.is_file():
        raise UserError(f"dataset YAML {data} does not exist; check the path")
    if output.suffix.lower() != ".pt":
        raise UserError(f"--output {output} must end in .pt (an Ultralytics checkpoint)")
    if model.lower().endswith(".pt") and not Path(model).is_file():
        raise UserError(f"--model {model} does not exist; give a local .pt or a model YAML (nothing is downloaded)")
    extra = _train_settings(settings or [])
    dev = resolve_device(device)
    ultralytics_ready()
    from ultralytics import YOLO

    try:
        detector = YOLO(model, task="detect")
    except Exception as exc:
        raise UserError(f"cannot load --model {model}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
    project = runs_dir() / "train"
    try:
        arguments = {"deterministic": True, "plots": False, "amp": False, "verbose": not quiet, "val": True, **extra}
        detector.train(data=str(data.resolve()), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, workers=workers,
                       patience=patience, device=_ultralytics_device(dev), project=str(project), name=output.stem,
                       exist_ok=True, **arguments)
    except (FileNotFoundError, SyntaxError, ValueError, RuntimeError) as exc:  # e.g. Ultralytics' dataset checks
        raise UserError(f"training failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
    trainer = detector.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    _copy_atomic(best, output)
    if not quiet:
        typer.echo(f"wrote {output} (from {best})", err=True)


def _batches(dataset, batch_size: int, on_batch) -> Iterator[tuple[torch.Tensor, dict]]:
    from cldyn_plugin_yolo.data import collate_images

    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield collate_images(items)
        on_batch(len(items), items[-1][2])


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


@app.command("eval")
@user_errors
def evaluate(
    fused: Annotated[list[Path], typer.Argument(help="Folder(s) of fused images (e.g. from `cldyn fuse`); several "
                                                "folders are compared side by side.")],
    labels: Annotated[Path, typer.Option(help="Folder of YOLO .txt labels named like the images "
                                         "(e.g. DATA/labels/test).")],
    task_weights: Annotated[Optional[Path], typer.Option(help="Detector: Ultralytics .pt (or a model .yaml).")] = None,
    task_config: Annotated[Optional[Path], typer.Option(help="YAML with nc/names, imgsz, rect, conf, iou, max_det.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 8,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON.")] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Detection metrics (mAP@0.5, mAP@0.5:0.95, per-class AP) of one detector on folders of fused images.

    Any detector can score any fusion: the one a compensation was trained with, or another one
    (the cross-detector check).
    """
    from cldyn_plugin_yolo.backend import load
    from cldyn_plugin_yolo.data import FusedImages

    if json_out is not None and json_out.is_dir():
        raise UserError(f"--json {json_out} is a folder; give a file name")
    backend = load(TaskOptions(task_weights, task_config, resolve_device(device)))
    sets = [FusedImages(folder, labels, len(backend.names), backend.imgsz, backend.stride, backend.rect)
            for folder in fused]
    keys = [str(folder) for folder in fused]
    if len(set(keys)) != len(keys):
        raise UserError("the same fused folder is given twice")
    results: dict[str, dict[str, float]] = {}
    with progress(quiet) as bar:
        job = bar.add_task("detecting", total=sum(len(s) for s in sets), status="")
        for key, dataset in zip(keys, sets):
            results[key] = backend.evaluate(_batches(dataset, batch_size,
                                                     lambda n, name: bar.update(job, advance=n, status=name)))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"weights": backend.detector.source, "imgsz": backend.imgsz, "labels": str(labels),
               "results": {key: {"images": len(dataset),
                                 "metrics": {k: (None if math.isnan(v) else v) for k, v in results[key].items()}}
                           for key, dataset in zip(keys, sets)}}
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
    table = Table(title=f"{backend.detector.source}: detection on fused images (labels {labels})")
    table.add_column("metric")
    for key, dataset in zip(keys, sets):
        table.add_column(f"{key}\n({len(dataset)} images)", justify="right")
    metric_names = list(dict.fromkeys(k for r in results.values() for k in r))
    for name in metric_names:
        table.add_row(name, *(_fmt(results[key].get(name, math.nan)) for key in keys))
    Console().print(table)
