"""`cldyn ctdnet ...`: train the CTDNet-18 task network, score fused images with it.

- ``cldyn ctdnet train DATA -o ctdnet.safetensors``: trains on the split's images fused by the base
  network (``--inputs rgb``: on the visible images), resumable with ``--resume``.
- ``cldyn ctdnet eval DATA --fused DIR [--fused DIR2 ...]``: F-measure, E-measure, S-measure and
  MAE of CTDNet on fused images against the split's masks, one column per folder.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cldyn_cli.plugin_api import (Device, Quiet, Seed, TaskOptions, UserError, progress, resolve_device, plugin_versions,
                                  resumed_step, user_errors)

app = typer.Typer(help="CTDNet-18 tools of the sod task: train the salient-object detector, score fused images.",
                  no_args_is_help=True)


@app.command("train")
@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="Dataset root: VT5000 ({Train,Test}/{RGB,T,GT}) or ir/ vis/ gt/ "
                                        "folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the trained CTDNet (.safetensors); "
                                         "use it as --task-weights.")],
    steps: Annotated[Optional[int], typer.Option(min=1, help="Training steps (overrides --epochs).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 40,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step (the authors used 32).")] = 16,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak SGD learning rate of the decoder.")] = 0.05,
    backbone_lr_scale: Annotated[Optional[float], typer.Option(
        min=0.0, help="Encoder learning rate as a fraction of --lr [default: 0.1 with --backbone-weights, "
                      "else 1].")] = None,
    size: Annotated[int, typer.Option(min=32, help="Images are resized to SIZE x SIZE.")] = 352,
    inputs: Annotated[str, typer.Option(help="fused: images fused by the base network (what the closed loop "
                                        "shows the task network); rgb: the visible images.")] = "fused",
    fused_with: Annotated[Optional[Path], typer.Option(help="Base fusion network for --inputs fused "
                                                       "[default: the model shipped with cldyn].")] = None,
    backbone_weights: Annotated[Optional[Path], typer.Option(help="ImageNet ResNet-18 state dict (.pth or "
                                                             ".safetensors) to start the encoder from.")] = None,
    split: Annotated[str, typer.Option(help="Split folder to train on.")] = "train",
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Save the resumable state every N steps.")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT's .train-state.safetensors.")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Threads decoding images (results do not depend on it).")] = 0,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train CTDNet-18 (ResNet-18 encoder, trilateral decoder) as the salient-object task network.

    SGD as in the authors' trainer (Nesterov momentum, triangular learning-rate schedule), random
    crops and flips, IoU + BCE on every saliency output and BCE on the edge output.
    """
    from cldyn_plugin_ctdnet.network import CTDNetConfig
    from cldyn_plugin_ctdnet.training import TrainConfig, train_ctdnet
    from cldyn_plugin_ctdnet.weights import save_ctdnet

    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'ctdnet.safetensors'}")
    if output.suffix.lower() != ".safetensors":
        raise UserError(f"--output {output} must end in .safetensors")
    if inputs == "rgb" and fused_with is not None:
        raise UserError("--fused-with is for --inputs fused; drop one of them")
    scale = backbone_lr_scale if backbone_lr_scale is not None else (0.1 if backbone_weights else 1.0)
    config = TrainConfig(size=size, batch_size=batch_size, lr=lr, backbone_lr_scale=scale, epochs=epochs,
                         steps=steps, seed=seed, inputs=inputs, split=split, checkpoint_every=checkpoint_every)
    dev = resolve_device(device)
    base = None
    if inputs == "fused":
        from cldyn_cli.plugin_api import load_vfn

        base = load_vfn(fused_with, dev)[0]
    resumed_at = resumed_step(output, resume)
    with progress(quiet) as bar:
        job = bar.add_task("training CTDNet", total=None, completed=resumed_at, status="")

        def on_step(step: int, total: int, loss: float, step_lr: float) -> None:
            bar.update(job, total=total, completed=step, status=f"loss {loss:.4f}  lr {step_lr:.4g}")

        net = train_ctdnet(data, output, config, dev, base=base, backbone=backbone_weights, resume=resume,
                           on_step=on_step, workers=workers)
    provenance = {"data": str(data), "split": split, "inputs": inputs,
                  "fused_with": str(fused_with) if fused_with else ("embedded" if inputs == "fused" else None),
                  "backbone_weights": str(backbone_weights) if backbone_weights else None,
                  "train": {k: getattr(config, k) for k in ("batch_size", "lr", "backbone_lr_scale", "epochs",
                                                            "steps", "seed")},
                  "plugins": plugin_versions(),
                  "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    save_ctdnet(net.cpu(), output, CTDNetConfig(size=size, seed=seed), provenance)
    if not quiet:
        typer.echo(f"wrote {output}", err=True)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


@app.command("eval")
@user_errors
def evaluate(
    data: Annotated[Path, typer.Argument(help="Dataset root holding the masks (VT5000 or ir/ vis/ gt/).")],
    fused: Annotated[list[Path], typer.Option(help="Folder of fused images named like the split's images "
                                              "(e.g. from `cldyn fuse`); repeat to compare methods.")],
    split: Annotated[str, typer.Option(help="Split whose masks to compare with.")] = "test",
    task_weights: Annotated[Optional[Path], typer.Option(help="CTDNet weights (`cldyn ctdnet train` output "
                                                         "or the authors' .pth).")] = None,
    task_config: Annotated[Optional[Path], typer.Option(help="YAML with size (and seed) for the network.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON.")] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score fused images with CTDNet: F-measure, E-measure, S-measure and MAE.

    maxF/meanF/adpF (beta^2 = 0.3), maxE/meanE/adpE, Sm and MAE (PySODMetrics); each prediction is
    compared with its mask at the mask's own resolution. One column per --fused folder.
    """
    from cldyn_plugin_ctdnet.backend import load
    from cldyn_plugin_ctdnet.data import FusedWithMasks, SodDataset
    from cldyn_plugin_ctdnet.metrics import HIGHER_IS_BETTER

    if json_out is not None and json_out.is_dir():
        raise UserError(f"--json {json_out} is a folder; give a file name")
    if len(set(fused)) != len(fused):
        raise UserError("the same --fused folder is given twice")
    if task_weights is None and not quiet:
        typer.echo("warning: no --task-weights: scoring with an untrained CTDNet", err=True)
    backend = load(TaskOptions(task_weights, task_config, resolve_device(device)))
    dataset = SodDataset(data, split, size=None)
    sources = [FusedWithMasks(folder, dataset) for folder in fused]  # all checked before any work
    short = [folder.name or str(folder) for folder in fused]
    names = short if len(set(short)) == len(short) else [str(folder) for folder in fused]  # column labels
    results: dict[str, dict[str, float]] = {}
    with progress(quiet) as bar:
        for name, source in zip(names, sources):
            job = bar.add_task(f"scoring {name}", total=len(source), status="")

            def batches(source=source, job=job):
                for i in range(len(source)):
                    image, target, item = source[i]
                    yield image[None], {"mask": target["mask"][None]}
                    bar.update(job, advance=1, status=item)

            results[name] = backend.evaluate(batches())
    if json_out is not None:
        from cldyn_cli.plugin_api import atomic_path

        doc = {"split": split, "images": len(dataset), "weights": str(task_weights) if task_weights else None,
               "size": backend.size,
               "methods": {n: {k: (None if math.isnan(v) else v) for k, v in r.items()} for n, r in results.items()}}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
    table = Table(title=f"CTDNet on {len(dataset)} image(s) of {data} ({split})")
    table.add_column("metric")
    table.add_column("better", justify="center")
    for name in names:
        table.add_column(name, justify="right")
    for metric in next(iter(results.values())):
        table.add_row(metric, "↑" if HIGHER_IS_BETTER[metric] else "↓", *(_fmt(results[n][metric]) for n in names))
    Console().print(table)
