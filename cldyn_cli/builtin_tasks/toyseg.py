"""Built-in reference task "toyseg": a tiny CNN segmenter on the FMB layout.

It exercises the whole plugin contract without any third-party library, so tests and demos can run
the closed loop on CPU in seconds. Hidden from listings (`cldyn plugins --all` shows it).
Layout: ``{root}/{split}/{Infrared,Visible,Label}/*.png``, Label = class index per pixel,
0 = background, 255 = ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cldyn_cli import hookimpl
from cldyn_cli.checkpoint import atomic_save, load_checkpoint, metadata_json
from cldyn_cli.config import build, load_config, setting
from cldyn_cli.data.images import read_image, read_infrared
from cldyn_cli.data.pairs import find_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import (Batch, FeatureTap, Sample, TappedNetwork, TaskBackend, TaskOptions, TaskSpec, find_module,
                             freeze)

FORMAT = "cldyn.toyseg"
IGNORE_INDEX = 255
DEFAULT_LAYER = "mid"


@dataclass
class ToySegConfig:
    """Network settings; ``--task-config`` YAML may set them when no weights are given."""

    num_classes: int = setting(15, min=2, max=254)  # FMB: background + 14 classes (255 = ignore)
    seed: int = setting(0, min=0)  # initialises the untrained network
    width: int = setting(16, min=4, max=256)  # channels of the first layers (the middle has twice as many)
    depth: int = setting(1, min=1, max=6)  # middle convolutions, dilated 2, 4, 8, ...: a wider view of the scene


class ToySegNet(nn.Module):
    """A stem, a stride-2 convolution, ``depth`` dilated ones and a 1x1 head; logits at the input's size.

    The defaults (width 16, depth 1: four convolutions, ~8k parameters) keep tests and demos fast; a
    wider and deeper one (e.g. width 32, depth 4) sees whole objects and is a useful segmenter.
    """

    def __init__(self, config: ToySegConfig) -> None:
        super().__init__()
        num_classes, width, depth = config.num_classes, config.width, config.depth
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(depth):
            dilation = 2 ** (i + 1)
            layers += [nn.Conv2d(width if i == 0 else 2 * width, 2 * width, 3, padding=dilation, dilation=dilation),
                       nn.ReLU()]
        self.mid = nn.Sequential(*layers)
        self.head = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, rgb: Tensor) -> Tensor:
        logits = self.head(self.mid(self.down(self.stem(rgb * 2 - 1))))
        return F.interpolate(logits, size=rgb.shape[-2:], mode="bilinear", align_corners=False)


def build_net(config: ToySegConfig) -> ToySegNet:
    """A freshly initialised network, the same for the same seed, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return ToySegNet(config)


def segmentation_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Pixel-wise cross-entropy; label 255 marks pixels without ground truth."""
    return F.cross_entropy(logits, targets.to(logits.device), ignore_index=IGNORE_INDEX)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts (num_classes, num_classes), rows = ground truth, columns = prediction; 255 skipped."""
    keep = target != IGNORE_INDEX
    truth, guess = target[keep].long(), pred[keep].long()
    if truth.numel() and int(truth.max()) >= num_classes:
        raise ValueError(f"label {int(truth.max())} is outside 0..{num_classes - 1}")
    return torch.bincount(truth * num_classes + guess, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """mIoU over classes present in truth or prediction, and pixel accuracy (fractions in [0, 1])."""
    confusion = confusion.double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    total = confusion.sum()
    miou = (hits[present] / union[present]).mean().item() if present.any() else float("nan")
    accuracy = (hits.sum() / total).item() if total > 0 else float("nan")
    return {"mIoU": miou, "pixel_acc": accuracy}


class FmbSegmentation(Dataset):
    """``{root}/{split}/{Infrared,Visible,Label}``, pairs matched by file stem."""

    def __init__(self, root: Path, split: str, num_classes: int) -> None:
        base = root / split
        if not base.is_dir():
            raise UserError(f"{root} has no {split}/ folder; toyseg expects the FMB layout "
                            "{train,test}/{Infrared,Visible,Label}/*.png")
        self.pairs = find_pairs(base / "Infrared", base / "Visible")
        self.labels = base / "Label"
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def _label(self, name: str) -> Tensor:
        path = self.labels / f"{name}.png"
        if not path.is_file():
            raise UserError(f"label {path} is missing; every Visible image needs a Label png of the same name")
        with Image.open(path) as im:
            label = torch.from_numpy(np.asarray(im).astype(np.int64))
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if label.ndim != 2 or bad.any():
            raise UserError(f"label {path} must be one channel of class indices 0..{self.num_classes - 1} "
                            f"(255 = ignore); set num_classes in --task-config")
        return label

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        ir = torch.from_numpy(read_infrared(pair.ir))[None]
        vis = torch.from_numpy(read_image(pair.vis))
        vis = vis.expand(3, *vis.shape) if vis.ndim == 2 else vis.permute(2, 0, 1)
        label = self._label(pair.name)
        if not ir.shape[-2:] == vis.shape[-2:] == label.shape:
            raise UserError(f"{pair.name!r}: infrared, visible and label sizes differ "
                            f"({tuple(ir.shape[-2:])}, {tuple(vis.shape[-2:])}, {tuple(label.shape)})")
        return Sample(ir=ir, vis=vis.contiguous(), target=label, name=pair.name)


def collate(samples: list[Sample]) -> Batch:
    """Stack same-sized samples; targets become a (B, H, W) long tensor."""
    return Batch(ir=torch.stack([s.ir for s in samples]), vis=torch.stack([s.vis for s in samples]),
                 targets=torch.stack([s.target for s in samples]), names=[s.name for s in samples])


class ToySegBackend(TaskBackend):
    """The frozen toy segmenter behind the task contract."""

    name = "toyseg"

    def __init__(self, net: ToySegNet, feature_layer: str = DEFAULT_LAYER,
                 device: torch.device = torch.device("cpu")) -> None:
        find_module(net, feature_layer)  # a wrong --feature-layer fails now, not mid-training
        self.net = freeze(net).to(device)
        self.feature_layer = feature_layer
        self.num_classes = net.head.out_channels

    def features(self, fused_rgb: Tensor) -> Tensor:
        with FeatureTap(self.net, self.feature_layer) as tap:
            self.net(fused_rgb)
        return tap.output

    def loss(self, fused_rgb: Tensor, targets: Tensor) -> Tensor:
        return segmentation_loss(self.net(fused_rgb), targets)

    def feature_network(self) -> TappedNetwork:
        return TappedNetwork(self.net, self.feature_layer)

    def dataset(self, root: Path, split: str) -> FmbSegmentation:
        return FmbSegmentation(root, split, self.num_classes)

    def collate(self, samples: list[Sample]) -> Batch:
        return collate(samples)

    @torch.no_grad()
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        for fused, targets in fused_batches:
            pred = self.net(fused).argmax(1).cpu()
            confusion += confusion_matrix(pred, targets.cpu(), self.num_classes)
        return segmentation_scores(confusion)


def save_toyseg(state: dict[str, Tensor], path: Path, config: ToySegConfig) -> None:
    """Weights as a cldyn safetensors checkpoint carrying the network config."""
    atomic_save(state, path, FORMAT, asdict(config))


def load_toyseg(options: TaskOptions) -> ToySegBackend:
    """From ``--task-weights`` (a save_toyseg file) or, without weights, a seeded untrained network."""
    if options.weights is not None and options.config is not None:
        raise UserError("toyseg takes --task-weights or --task-config, not both: its weights carry their config")
    if options.weights is not None:
        tensors, metadata = load_checkpoint(options.weights, FORMAT)
        config = build(ToySegConfig, metadata_json(metadata, "config", options.weights), str(options.weights))
        net = ToySegNet(config)
        try:
            net.load_state_dict(tensors)
        except RuntimeError as exc:
            raise UserError(f"{options.weights} does not fit the toyseg network: {str(exc).splitlines()[0]}") from None
    else:
        net = build_net(load_config(ToySegConfig, options.config, {}))
    return ToySegBackend(net, options.feature_layer or DEFAULT_LAYER, options.device)


def train_toyseg(root: Path, steps: int = 100, seed: int = 0, *, config: Optional[ToySegConfig] = None,
                 split: str = "train", inputs: Callable[[Batch], Tensor] = lambda batch: batch.vis,
                 batch_size: int = 4, lr: float = 0.01) -> dict[str, Tensor]:
    """Train from scratch for ``steps`` Adam steps; returns the state dict (save it with save_toyseg,
    with the same ``config``; its ``seed`` is ignored, ``seed`` drives initialisation and batch order).

    ``inputs`` picks the image the network learns from: the visible image by default, or pass a
    fusion function of the batch to train on fused images. Repeats exactly for the same seed.
    """
    config = config or ToySegConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ToySegNet(config)
        data = FmbSegmentation(root, split, config.num_classes)
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(seed))
        optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        done = 0
        while done < steps:
            for batch in loader:
                loss = segmentation_loss(net(inputs(batch)), batch.targets)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                done += 1
                if done == steps:
                    break
    return {key: value.detach().clone() for key, value in net.state_dict().items()}


@hookimpl
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    register(TaskSpec(name="toyseg", description="Tiny CNN segmenter on the FMB layout (reference task for tests)",
                      load=load_toyseg, hidden=True))


def main(argv: list[str]) -> None:
    """``python -m cldyn_cli.builtin_tasks.toyseg FMB_ROOT OUT.safetensors [STEPS]``: weights for demos."""
    from cldyn_cli.data.synth import CLASSES

    if len(argv) not in (2, 3):
        raise SystemExit("usage: python -m cldyn_cli.builtin_tasks.toyseg FMB_ROOT OUT.safetensors [STEPS]")
    config = ToySegConfig(num_classes=len(CLASSES))
    steps = int(argv[2]) if len(argv) == 3 else 200
    save_toyseg(train_toyseg(Path(argv[0]), steps, config=config), Path(argv[1]), config)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
