"""The det task backend: a frozen Ultralytics detector (YOLO or RT-DETR) seen through cldyn's task contract.

Features: the activation of ``feature_layer`` (default: the deepest neck output feeding the Detect
or RT-DETR decoder head, see :func:`loading.default_feature_layer`) on the letterboxed fused RGB image
(stretched to a square for an RT-DETR, as Ultralytics feeds it; see :mod:`data`).

Loss: Ultralytics' own detection criterion through ``model.loss(batch, predictions)``, as Ultralytics
computes its validation loss. The network stays in eval mode (BatchNorm uses its running statistics)
and its parameters are frozen; gradients reach only the image.

- YOLO: ``v8DetectionLoss`` (``E2ELoss`` for end-to-end heads) with the model's ``box``/``cls``/``dfl``
  gains, on the raw part of the Detect head's eval output ``(decoded, raw)``. The scalar is the sum
  of the gained terms averaged over the batch (what Ultralytics logs as ``box_loss + cls_loss + dfl_loss``;
  its criterion returns them times the batch size).
- RT-DETR: ``RTDETRDetectionLoss`` (Hungarian matching of queries to boxes; varifocal class loss,
  L1 and GIoU box losses) on the encoder's top queries and the decoder's output layer, which is
  what the decoder computes in eval mode. The scalar is the sum of its terms, each already a mean
  over the batch's boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

from cldyn_cli.plugin_api import (Batch, FeatureTap, Sample, TappedNetwork, TaskBackend, TaskOptions, find_module,
                                  freeze)

from cldyn_plugin_yolo import data
from cldyn_plugin_yolo.evaluation import DetectionScorer
from cldyn_plugin_yolo.loading import Detector, default_feature_layer, load_detector


class YoloBackend(TaskBackend):
    """A frozen Ultralytics detector as the closed loop's ``det`` task."""

    name = "det"

    def __init__(self, detector: Detector, feature_layer: str | None = None,
                 device: torch.device = torch.device("cpu")) -> None:
        self.detector = detector
        self.model = freeze(detector.model).to(device)
        self.feature_layer = feature_layer or default_feature_layer(self.model)
        find_module(self.model, self.feature_layer)  # a wrong --feature-layer fails now, not mid-training
        self.device = device
        self.names = detector.names
        self.imgsz, self.stride, self.rect = detector.imgsz, detector.stride, detector.rect
        self.model.criterion = self.model.init_criterion()  # built after .to(device): it keeps the device

    # -- images -------------------------------------------------------------------------------------

    def prepare(self, fused_rgb: Tensor) -> tuple[Tensor, data.Geometry]:
        """Letterbox a fused batch the way the dataset does (a no-op on dataset batches)."""
        height, width = (int(n) for n in fused_rgb.shape[-2:])  # plain ints, also while tracing for export
        geometry = data.letterbox_geometry(height, width, self.imgsz, self.stride, self.rect, self.detector.rtdetr)
        return data.letterbox(fused_rgb, geometry), geometry

    def _targets(self, targets: dict[str, Tensor], geometry: data.Geometry) -> dict[str, Tensor]:
        boxes = targets["bboxes"].to(self.device, torch.float32)
        return {"batch_idx": targets["batch_idx"].to(self.device, torch.float32).view(-1),
                "cls": targets["cls"].to(self.device, torch.float32).view(-1, 1),
                "bboxes": data.letterbox_boxes(boxes, geometry)}

    # -- the contract -------------------------------------------------------------------------------

    def features(self, fused_rgb: Tensor) -> Tensor:
        images, _ = self.prepare(fused_rgb.to(self.device))
        with FeatureTap(self.model, self.feature_layer) as tap:
            self.model(images)
        return tap.output

    def loss(self, fused_rgb: Tensor, targets: dict[str, Tensor]) -> Tensor:
        images, geometry = self.prepare(fused_rgb.to(self.device))
        predictions = self.model(images)  # eval mode: (decoded, raw); the criterion takes the raw part
        total, _items = self.model.loss({"img": images, **self._targets(targets, geometry)}, predictions)
        return total if self.detector.rtdetr else total.sum() / images.shape[0]

    def feature_network(self) -> TappedNetwork:
        # The letterbox geometry is worked out from the input size: the graph holds for the traced size.
        return TappedNetwork(self.model, self.feature_layer, lambda rgb: self.prepare(rgb)[0], dynamic_size=False)

    def dataset(self, root: Path, split: str) -> data.DetectionDataset:
        return data.DetectionDataset(Path(root), split, self.detector.classes, self.imgsz, self.stride, self.rect,
                                     stretch=self.detector.rtdetr)

    def collate(self, samples: list[Sample]) -> Batch:
        return data.collate(samples)

    def fused_dataset(self, fused: Path, root: Path, split: str) -> data.DetectionDataset:
        """Fused images letterboxed exactly like the split's visible images, with its labels."""
        return data.DetectionDataset(Path(root), split, self.detector.classes, self.imgsz, self.stride, self.rect,
                                     images=Path(fused), stretch=self.detector.rtdetr)

    def scorer(self) -> DetectionScorer:
        """A scorer for this detector's output form, keeping only the classes the data's labels map to."""
        classes = self.detector.classes
        return DetectionScorer(self.names, self.detector.conf, self.detector.iou, self.detector.max_det,
                               end2end=bool(getattr(self.model, "end2end", False)), rtdetr=self.detector.rtdetr,
                               classes=None if classes.identity else classes.detector_classes)

    @torch.no_grad()
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        scorer = self.scorer()
        for fused, targets in fused_batches:
            images, geometry = self.prepare(fused.to(self.device))
            scorer.add(self.model(images), self._targets(targets, geometry), tuple(images.shape[-2:]))
        return scorer.results()


def load(options: TaskOptions) -> YoloBackend:
    """``TaskSpec.load``: the detector from ``--task-weights``/``--task-config`` on ``options.device``."""
    detector = load_detector(options.weights, options.config, options.trust)
    return YoloBackend(detector, options.feature_layer, options.device)
