"""`cldyn ctdnet train`: train the CTDNet-18 task network.

``cldyn ctdnet train DATA -o ctdnet.safetensors`` trains on the split's images fused by the base
network (``--inputs rgb``: on the visible images), resumable with ``--resume``. Fused images are
scored by ``cldyn eval --task sod`` (F-measure, E-measure, S-measure and MAE against the masks).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.plugin_api import (Device, Quiet, Seed, UserError, plugin_versions, progress, resolve_device,
                                  resumed_step, user_errors)

app = typer.Typer(help="CTDNet-18 tools of the sod task: train the salient-object detector (score fused images "
                       "with `cldyn eval --task sod`).",
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
