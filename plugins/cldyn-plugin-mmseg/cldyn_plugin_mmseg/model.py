"""Building the MMSeg segmentor, loading its weights, and feeding it fused RGB batches in torch.

MMSeg normally normalises images in its data preprocessor from uint8 BGR arrays. Here the fused
image is a float RGB tensor in [0, 1] that must keep its gradient, so the same arithmetic is done
in torch: resize to the network's input size, scale to [0, 255], put the channels in the order the
network was trained on (RGB when the preprocessor has ``bgr_to_rgb=True``, else BGR, as MMSeg
reads files with OpenCV), and subtract ``mean`` / divide by ``std`` taken from the preprocessor.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldyn_cli.plugin_api import UserError
from cldyn_plugin_mmseg._env import mmseg_ready
from cldyn_plugin_mmseg.config import Resolved


def build_segmentor(resolved: Resolved) -> nn.Module:
    """The segmentor of ``resolved.cfg``, initialised (seeded) and, with a checkpoint, loaded strictly."""
    mmseg_ready()
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = resolved.cfg.model
    try:
        # The segmentor builds its parts (data preprocessor, losses) through MMEngine's root
        # registries, which find MMSeg's classes only under MMSeg's default scope.
        with DefaultScope.overwrite_default_scope("mmseg"), torch.random.fork_rng(devices=[]), \
                warnings.catch_warnings():
            # MMSeg's own deprecation notice (build_loss) and its note on avg_non_ignore: not for users.
            warnings.filterwarnings("ignore", message=".*build_loss.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*avg_non_ignore.*", category=UserWarning)
            torch.manual_seed(resolved.seed)
            model = MODELS.build(cfg)
            model.init_weights()
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"cannot build the network of {resolved.source}: {type(exc).__name__}: "
                        f"{first[0] if first else ''}") from None
    if resolved.checkpoint is not None:
        load_weights(model, resolved.checkpoint["state_dict"], resolved.source)
    return model


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Strict loading: a checkpoint of another architecture or class count is a one-line error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise UserError(f"the task weights do not fit the network of {source} ({'; '.join(parts)}); "
                        "pass the config they were trained with as --task-config")
    model.load_state_dict(state, strict=True)


class InputAdapter(nn.Module):
    """Fused RGB in [0, 1] -> the normalised tensor the segmentor expects, differentiably."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        pre = getattr(model, "data_preprocessor", None)
        mean = getattr(pre, "mean", None) if getattr(pre, "_enable_normalize", False) else None
        std = getattr(pre, "std", None) if getattr(pre, "_enable_normalize", False) else None
        self.size = tuple(size)
        self.bgr = not bool(getattr(pre, "channel_conversion", False))
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(3, 1, 1)).detach().clone().float())
        self.register_buffer("std", (std if std is not None else torch.ones(3, 1, 1)).detach().clone().float())

    def forward(self, fused_rgb: Tensor) -> Tensor:
        if fused_rgb.ndim != 4 or fused_rgb.shape[1] != 3:
            raise ValueError(f"expected a fused RGB batch (B, 3, H, W), got {tuple(fused_rgb.shape)}")
        x = fused_rgb.float()
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        x = x * 255.0
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std


def seg_samples(targets: Tensor) -> list[Any]:
    """Ground truth (B, H, W) as MMSeg SegDataSamples (``gt_sem_seg``) for the decode head's loss."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for label in targets:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        sample.set_metainfo({"img_shape": tuple(label.shape), "ori_shape": tuple(label.shape)})
        samples.append(sample)
    return samples


def total_loss(losses: dict[str, Any]) -> Tensor:
    """Sum of every entry whose name contains ``loss`` (decode head and auxiliary heads), as MMEngine does."""
    total = None
    for name, value in losses.items():
        if "loss" not in name:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            total = v.mean() if total is None else total + v.mean()
    if total is None:
        raise RuntimeError("the segmentor returned no loss terms")
    return total
