"""The ``sod`` task backend: a frozen CTDNet-18 judging fused images.

Fused RGB in [0, 1] is resized to ``size`` x ``size`` and normalised as the authors did; the task
feature is the activation of ``fuse23.bn_2`` (the batch norm inside the boundary refinement module,
the last decoder stage before the saliency head: 64 channels at 1/4 resolution), the layer the
CLDyN authors tap; ``--feature-layer`` picks another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from cldyn_cli.config import read_yaml
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import Batch, FeatureTap, Sample, TappedNetwork, TaskBackend, TaskOptions, find_module, freeze

from cldyn_plugin_ctdnet.data import SodDataset, collate
from cldyn_plugin_ctdnet.loss import ctdnet_loss, mask_edges
from cldyn_plugin_ctdnet.metrics import SodMetrics
from cldyn_plugin_ctdnet.network import CTDNet, CTDNetConfig, CTDNetOutput, preprocess
from cldyn_plugin_ctdnet.weights import load_ctdnet

DEFAULT_LAYER = "fuse23.bn_2"
MIN_SIZE = 32  # the encoder's stride


def check_size(size: Any, source: str) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE:
        raise UserError(f"size {size!r} in {source} must be an integer of at least {MIN_SIZE} (the default is 352)")
    return size


class CTDNetBackend(TaskBackend):
    """The frozen CTDNet behind the task contract."""

    name = "sod"

    def __init__(self, net: CTDNet, config: CTDNetConfig, feature_layer: str = DEFAULT_LAYER,
                 device: torch.device = torch.device("cpu")) -> None:
        find_module(net, feature_layer)  # a wrong --feature-layer fails now, not mid-training
        self.net = freeze(net).to(device)
        self.config = config
        self.size = check_size(config.size, "the CTDNet config")
        self.feature_layer = feature_layer
        self.device = device

    def predict(self, fused_rgb: Tensor, with_aux: bool = False) -> CTDNetOutput:
        """Network outputs (logits at ``size`` x ``size``) for a fused RGB batch in [0, 1]."""
        return self.net(preprocess(fused_rgb, self.size), with_aux=with_aux)

    def features(self, fused_rgb: Tensor) -> Tensor:
        with FeatureTap(self.net, self.feature_layer) as tap:
            self.predict(fused_rgb)
        return tap.output

    def loss(self, fused_rgb: Tensor, targets: dict[str, Tensor]) -> Tensor:
        mask = targets["mask"].to(fused_rgb.device, fused_rgb.dtype)
        edge = targets.get("edge")
        edge = mask_edges(mask) if edge is None else edge.to(fused_rgb.device, fused_rgb.dtype)
        return ctdnet_loss(self.predict(fused_rgb, with_aux=True), mask, edge)

    def feature_network(self) -> TappedNetwork:
        # The resize to size x size depends on the input size (antialiased when shrinking, skipped when
        # equal): the graph holds for the traced size.
        return TappedNetwork(self.net, self.feature_layer, lambda rgb: preprocess(rgb, self.size), dynamic_size=False)

    def dataset(self, root: Path, split: str) -> SodDataset:
        return SodDataset(root, split, self.size)

    def collate(self, samples: list[Sample]) -> Batch:
        return collate(samples)

    @torch.no_grad()
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        """maxF, meanF, adpF, maxE, meanE, adpE, Sm, MAE; predictions are compared at the masks' size."""
        metrics = SodMetrics()
        for fused, targets in fused_batches:
            masks = targets["mask"]
            probs = torch.sigmoid(self.predict(fused.to(self.device)).saliency)
            if probs.shape[2:] != masks.shape[2:]:
                probs = F.interpolate(probs, size=masks.shape[2:], mode="bilinear", align_corners=False)
            metrics.step_batch(probs.cpu(), masks.cpu())
        return metrics.results()


def task_config(path: Path | None) -> dict[str, Any]:
    """The keys of a ``--task-config`` YAML (size, seed)."""
    return read_yaml(path) if path is not None else {}


def load(options: TaskOptions) -> CTDNetBackend:
    """From ``--task-weights`` (a `cldyn ctdnet train` file or the authors' .pth) or, without weights,
    a seeded untrained network; ``--task-config`` YAML may set ``size`` (and ``seed``)."""
    overrides = task_config(options.config)
    if "size" in overrides:
        check_size(overrides["size"], str(options.config))
    net, config = load_ctdnet(options.weights, overrides)
    return CTDNetBackend(net, config, options.feature_layer or DEFAULT_LAYER, options.device)
