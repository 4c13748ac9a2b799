"""An example cldyn task plugin: "example-sod", a tiny salient-object detector.

It reads the VT5000 layout ``{Train,Test}/{RGB,T,GT}/*.png`` and is small enough to read in one
sitting; docs/writing-a-plugin.md explains each part, and tests/test_plugins.py runs it.
A real plugin wraps its library's network the same way and imports that library inside ``load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
import typer
from safetensors.torch import load_file
from torch import Tensor, nn

from cldyn_cli.plugin_api import (Batch, FeatureTap, Sample, TaskBackend, TaskOptions, TaskSpec, UserError, find_module,
                                  find_pairs, freeze, hookimpl, read_image, read_infrared)


class TinySaliencyNet(nn.Module):
    """Two convolutions and a 1x1 head: saliency logits (B, 1, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, rgb: Tensor) -> Tensor:
        return self.head(self.encoder(rgb))


def split_folder(root: Path, split: str) -> Path:
    """VT5000 writes Train/ and Test/; cldyn passes "train" (compensate) or --split (eval): match any case."""
    found = [d for d in root.iterdir() if d.is_dir() and d.name.lower() == split.lower()] if root.is_dir() else []
    if not found:
        raise UserError(f"no split {split!r} in {root}; expected {root / split.capitalize()}/T, RGB and GT")
    return found[0]


class SaliencyData(torch.utils.data.Dataset):
    """VT5000: thermal in T/, colour in RGB/, binary ground truth in GT/ (255 = salient)."""

    def __init__(self, root: Path, split: str) -> None:
        folder = split_folder(root, split)
        self.pairs = find_pairs(folder / "T", folder / "RGB")
        self.gt = folder / "GT"

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        vis = torch.from_numpy(read_image(pair.vis))
        vis = vis.expand(3, *vis.shape) if vis.ndim == 2 else vis.permute(2, 0, 1)
        mask = torch.from_numpy(read_infrared(self.gt / f"{pair.name}.png"))[None]  # first channel, [0, 1]
        return Sample(ir=torch.from_numpy(read_infrared(pair.ir))[None], vis=vis.contiguous(),
                      target=(mask > 0.5).float(), name=pair.name)


class SaliencyBackend(TaskBackend):
    name = "example-sod"

    def __init__(self, net: nn.Module, feature_layer: str, device: torch.device) -> None:
        find_module(net, feature_layer)  # fail at load time on a wrong --feature-layer
        self.net = freeze(net).to(device)
        self.feature_layer = feature_layer

    def features(self, fused_rgb: Tensor) -> Tensor:
        with FeatureTap(self.net, self.feature_layer) as tap:
            self.net(fused_rgb)
        return tap.output

    def loss(self, fused_rgb: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.net(fused_rgb), targets.to(fused_rgb.device))

    def dataset(self, root: Path, split: str) -> SaliencyData:
        return SaliencyData(root, split)

    def collate(self, samples: list[Sample]) -> Batch:
        return Batch(ir=torch.stack([s.ir for s in samples]), vis=torch.stack([s.vis for s in samples]),
                     targets=torch.stack([s.target for s in samples]), names=[s.name for s in samples])

    @torch.no_grad()
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        errors = [(torch.sigmoid(self.net(fused)) - masks.to(fused.device)).abs().mean().item()
                  for fused, masks in fused_batches]
        return {"MAE": sum(errors) / len(errors)}


def load(options: TaskOptions) -> SaliencyBackend:
    """The user's weights (a safetensors state dict), or a seeded untrained network for tests."""
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's generator
        torch.manual_seed(0)
        net = TinySaliencyNet()
    if options.weights is not None:
        if not options.weights.is_file():
            raise UserError(f"--task-weights {options.weights} does not exist; check the path")
        net.load_state_dict(load_file(str(options.weights)))
    return SaliencyBackend(net, options.feature_layer or "encoder", options.device)


@hookimpl
def register_tasks(register) -> None:
    register(TaskSpec(name="example-sod", description="Tiny example salient-object detector", load=load))


def info() -> None:
    """Print what the example task taps."""
    typer.echo("example-sod taps 'encoder' of TinySaliencyNet")


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    group = typer.Typer(help="Commands of the example plugin.")
    group.command()(info)
    cli.add_typer(group, name="example")  # -> `cldyn example info`
