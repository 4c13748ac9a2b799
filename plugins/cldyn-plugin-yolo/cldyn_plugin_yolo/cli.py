"""`cldyn yolo train`: train a detector with Ultralytics' own trainer, offline.

``cldyn yolo train DATA.yaml -o best.pt`` runs ``YOLO(model).train(...)`` (which becomes Ultralytics'
``RTDETR`` model, and trainer, for an RT-DETR YAML or checkpoint) with plots, AMP checks and
everything that could reach the network switched off, under ``$CLDYN_YOLO_DIR/runs/train``.
Fused images are scored by ``cldyn eval --task det`` (mAP@0.5, mAP@0.5:0.95, per-class AP).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from cldyn_cli.plugin_api import Device, Quiet, UserError, atomic_path, resolve_device, user_errors

app = typer.Typer(help="Ultralytics YOLO tools of the det task: train a detector offline (score fused images "
                       "with `cldyn eval --task det`).",
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
    model: Annotated[str, typer.Option(help="Model YAML (e.g. yolov8n.yaml, yolo11n.yaml, rtdetr-l.yaml: trained "
                                       "from scratch) or a local .pt to fine-tune; an RT-DETR trains with "
                                       "Ultralytics' RT-DETR trainer.")] = "yolov8n.yaml",
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
    """Train an Ultralytics detector (YOLO or RT-DETR) on a YOLO dataset with its own trainer, fully offline."""
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
