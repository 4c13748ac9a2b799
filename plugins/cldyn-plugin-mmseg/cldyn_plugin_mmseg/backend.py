"""The ``seg`` task backend: a frozen MMSegmentation segmentor behind cldyn's TaskBackend contract.

- features: the activation of one module, by default the last encoder stage's output norm of a
  MixVisionTransformer (``backbone.layers.3.2`` in MMSeg's naming; the SegFormer paper code calls
  it ``backbone.norm4``, which is accepted as an alias, as is ``backbone.normN`` for stage N).
  It is a LayerNorm over the stage's tokens, so the feature is sequence-shaped (B, h*w, C).
- loss: the segmentor's own training loss (``model.loss``: decode head, plus auxiliary heads if
  the config has any) of the fused batch against SegDataSample ground truth, with the data
  preprocessor's normalisation done in torch so the gradient reaches the image.
- evaluate: predictions resized to the ground truth, scored with MMSeg's IoUMetric.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldyn_cli.plugin_api import Batch, FeatureTap, Sample, TaskBackend, TaskOptions, UserError, find_module, freeze
from cldyn_plugin_mmseg.config import Resolved, resolve
from cldyn_plugin_mmseg.data import SegmentationPairs, collate
from cldyn_plugin_mmseg.metrics import SegScores
from cldyn_plugin_mmseg.model import InputAdapter, build_segmentor, seg_samples, total_loss


def default_feature_layer(model: nn.Module) -> str:
    """The last encoder stage's output: MiT's last stage norm, or a ResNet's ``layer4``."""
    backbone = getattr(model, "backbone", None)
    layers = getattr(backbone, "layers", None)
    if type(backbone).__name__ == "MixVisionTransformer" and layers is not None:
        return f"backbone.layers.{len(layers) - 1}.2"
    if backbone is not None and hasattr(backbone, "layer4"):
        return "backbone.layer4"
    raise UserError(f"no default feature layer for a {type(backbone).__name__} backbone; pass --feature-layer "
                    "(a module name such as backbone.<stage>)")


def resolve_feature_layer(model: nn.Module, name: str | None) -> str:
    """``name`` (or the default) as a real module name; ``backbone.normN`` maps to MiT's stage-N norm."""
    if name is None:
        return default_feature_layer(model)
    alias = re.fullmatch(r"backbone\.norm(\d+)", name)
    if alias and type(getattr(model, "backbone", None)).__name__ == "MixVisionTransformer":
        stage = int(alias.group(1))
        count = len(model.backbone.layers)
        if not 1 <= stage <= count:
            raise UserError(f"--feature-layer {name}: the backbone has stages 1..{count}")
        name = f"backbone.layers.{stage - 1}.2"
    find_module(model, name)  # a wrong name fails now with suggestions
    return name


class MMSegBackend(TaskBackend):
    """A frozen MMSeg segmentor seen through the closed loop's eyes."""

    name = "seg"

    def __init__(self, model: nn.Module, resolved: Resolved, feature_layer: str | None = None,
                 device: torch.device = torch.device("cpu")) -> None:
        self.model = freeze(model).to(device)
        self.adapter = InputAdapter(self.model, resolved.size).to(device)
        self.feature_layer = resolve_feature_layer(self.model, feature_layer)
        self.classes = resolved.classes
        self.num_classes = len(resolved.classes)
        self.size = resolved.size
        self.source = resolved.source
        self.device = device
        self.align_corners = bool(getattr(self.model, "align_corners", False))

    def _inputs(self, fused_rgb: Tensor) -> Tensor:
        return self.adapter(fused_rgb.to(self.device))

    def features(self, fused_rgb: Tensor) -> Tensor:
        x = self._inputs(fused_rgb)
        with FeatureTap(self.model, self.feature_layer) as tap:
            if self.feature_layer.startswith("backbone."):
                self.model.extract_feat(x)
            else:
                self.model._forward(x)
        return tap.output

    def logits(self, fused_rgb: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Class scores (B, K, H, W), resized to ``size`` (default: the input's size)."""
        out = self.model._forward(self._inputs(fused_rgb))
        size = tuple(size or fused_rgb.shape[-2:])
        return F.interpolate(out, size=size, mode="bilinear", align_corners=self.align_corners)

    def loss(self, fused_rgb: Tensor, targets: Tensor) -> Tensor:
        targets = targets.to(self.device)
        losses = self.model.loss(self._inputs(fused_rgb), seg_samples(targets))
        return total_loss(losses)

    def dataset(self, root: Path, split: str) -> SegmentationPairs:
        return SegmentationPairs(root, split, self.num_classes, self.size)

    def collate(self, samples: list[Sample]) -> Batch:
        return collate(samples)

    def fused_dataset(self, fused: Path, root: Path, split: str) -> SegmentationPairs:
        """Fused images at full size with the split's masks (``evaluate`` predicts at the masks' size)."""
        return SegmentationPairs(root, split, self.num_classes, None, images=fused)

    @torch.no_grad()
    def predict(self, fused_rgb: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Class indices (B, H, W) at ``size`` (default: the input's size)."""
        return self.logits(fused_rgb, size).argmax(1)

    @torch.no_grad()
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        scores = SegScores(self.classes)
        for fused, targets in fused_batches:
            targets = torch.as_tensor(targets)
            scores.add(self.predict(fused, tuple(targets.shape[-2:])).cpu(), targets.cpu())
        return scores.result()


def load(options: TaskOptions) -> MMSegBackend:
    """The seg backend from ``--task-config`` / ``--task-weights`` (see ``config.py``)."""
    resolved = resolve(options.config, options.weights, options.trust)
    model = build_segmentor(resolved)
    return MMSegBackend(model, resolved, options.feature_layer, options.device)
