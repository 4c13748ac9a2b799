"""A short, seeded training loop for an MMSeg segmentor on (image, mask) pairs, and its checkpoint.

Meant for the examples and for tests (a tiny SegFormer trained in minutes on a CPU), not for real
training, where MMSegmentation's own ``tools/train.py`` is the tool; its checkpoints load the same way.
The loop uses the segmentor's own loss (``model.loss``) on images normalised as in the backend,
AdamW with a linear warm-up and polynomial decay as in the SegFormer configs, random horizontal
flips, and a fixed seed: the same inputs give the same weights on a CPU.

The checkpoint is what MMEngine's runner writes, minus optimiser and message-hub state:
``{"meta": {"cfg": <config text>, "dataset_meta": {"classes": [...]}, ...}, "state_dict": ...}``,
so MMSegmentation's tools (``init_model(cfg, checkpoint)``) read it, and ``--task-weights`` alone
is enough for cldyn (the config travels inside).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cldyn_cli.plugin_api import UserError, atomic_path
from cldyn_plugin_mmseg.config import Resolved
from cldyn_plugin_mmseg.data import resize_image, resize_mask
from cldyn_plugin_mmseg.model import InputAdapter, seg_samples, total_loss


@dataclass
class TrainSettings:
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps
    seed: int = 0


def _batch(data: Dataset, indices: list[int], size: tuple[int, int], flips: Tensor) -> tuple[Tensor, Tensor]:
    images, masks = [], []
    for i, flip in zip(indices, flips.tolist()):
        rgb, mask, _ = data[i]
        rgb, mask = resize_image(rgb, size), resize_mask(mask, size)
        if flip:
            rgb, mask = rgb.flip(-1), mask.flip(-1)
        images.append(rgb)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


def train_segmentor(model: torch.nn.Module, resolved: Resolved, data: Dataset, settings: TrainSettings,
                    device: torch.device, on_step: Optional[Callable[[int, float], None]] = None
                    ) -> dict[str, Tensor]:
    """Train ``model`` in place for ``settings.steps`` steps; returns a CPU copy of its state dict."""
    if len(data) == 0:
        raise UserError("no training images")
    model = model.to(device).train()
    adapter = InputAdapter(model, resolved.size).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warm = max(1, int(settings.warmup * settings.steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 1.0 - (step - warm) / max(1, settings.steps - warm))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for step in range(settings.steps):
            if len(order) < settings.batch_size:
                order += torch.randperm(len(data), generator=generator).tolist()
            indices, order = order[:settings.batch_size], order[settings.batch_size:]
            flips = torch.rand(len(indices), generator=generator) < 0.5
            images, masks = _batch(data, indices, resolved.size, flips)
            losses = model.loss(adapter(images.to(device)), seg_samples(masks.to(device)))
            loss = total_loss(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if on_step is not None:
                on_step(step + 1, float(loss.detach()))
    model.eval()
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, state: dict[str, Tensor], resolved: Resolved, extra: dict | None = None) -> None:
    """An MMEngine-style checkpoint carrying its config and class names (atomic write)."""
    from cldyn_plugin_mmseg import __version__

    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name such as {path / 'segformer.pth'}")
    meta = {"cfg": resolved.cfg.pretty_text, "dataset_meta": {"classes": list(resolved.classes)},
            "cldyn_plugin_mmseg": {"version": __version__, "size": list(resolved.size),
                                   "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                   **(extra or {})}}
    with atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": state}, tmp)
