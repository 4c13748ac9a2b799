"""Detection metrics with Ultralytics' own code: its NMS, its prediction matching and DetMetrics.

This is what ``yolo val`` does per batch (``DetectionValidator.postprocess`` for NMS with the
validator's arguments, ``match_predictions`` over IoU 0.50:0.05:0.95, ``DetMetrics`` / ``ap_per_class``),
without its data loading: boxes are compared in the letterboxed image the network saw, which changes
no IoU because letterboxing scales both sides uniformly. An RT-DETR's head already returns its
ranked detections (normalised ``cx cy w h``, score, class; no NMS): ``RTDETRValidator.postprocess``
turns them into pixel boxes of the batch's image size and keeps those above ``conf``.

``classes`` restricts the detections to the detector classes the data's labels map to (the
``classes`` filter of ``yolo val``), so a COCO detector scored on M3FD classes is not also judged
on the classes the data does not label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cldyn_plugin_yolo._env import runs_dir, ultralytics_ready


class DetectionScorer:
    """Accumulates predictions against ground truth; :meth:`results` gives the named metrics."""

    def __init__(self, names: list[str], conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                 end2end: bool = False, rtdetr: bool = False, classes: list[int] | None = None) -> None:
        """``names``: the detector's classes; ``rtdetr``: its predictions come from an RT-DETR head;
        ``classes``: keep only detections of these classes (None: all)."""
        ultralytics_ready()
        from ultralytics.models.rtdetr import RTDETRValidator
        from ultralytics.models.yolo.detect import DetectionValidator
        from ultralytics.utils.metrics import DetMetrics

        args = dict(conf=conf, iou=iou, max_det=max_det, plots=False, save_json=False, save_txt=False,
                    verbose=False, task="detect", classes=classes)
        self.validator = (RTDETRValidator if rtdetr else DetectionValidator)(save_dir=runs_dir() / "val", args=args)
        self.validator.end2end = end2end
        self.rtdetr = rtdetr
        self.validator.nc = len(names)
        self.names = list(names)
        self.metrics = DetMetrics(names=dict(enumerate(names)))
        self.images = 0

    def detections(self, predictions: Any, image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Per image ``bboxes`` (pixel xyxy), ``conf`` and ``cls`` from the network's eval output, as `yolo val`
        makes them: NMS for YOLO, the ranked RT-DETR detections scaled to ``image_size`` (height, width)."""
        from ultralytics.utils import nms

        if self.rtdetr:
            self.validator.args.imgsz = list(image_size)  # what its postprocess scales the boxes by
            return self.validator.postprocess(predictions)
        args = self.validator.args
        # DetectionValidator.postprocess's call, with the class filter it leaves out.
        outputs = nms.non_max_suppression(predictions, args.conf, args.iou, classes=args.classes, multi_label=True,
                                          agnostic=args.single_cls or args.agnostic_nms, max_det=args.max_det,
                                          end2end=self.validator.end2end)
        return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5]} for x in outputs]

    def add(self, predictions: Any, targets: dict[str, Tensor], image_size: tuple[int, int]) -> None:
        """One batch: the network's eval output (before NMS) and the batch's Ultralytics targets,
        boxes normalised to ``image_size`` (height, width) of the images the network saw."""
        from ultralytics.utils import ops
        from ultralytics.utils.metrics import box_iou

        detections = self.detections(predictions, image_size)
        height, width = image_size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        batch_idx = targets["batch_idx"].detach().cpu().view(-1)
        cls_all = targets["cls"].detach().cpu().view(-1)
        boxes_all = targets["bboxes"].detach().cpu().float().view(-1, 4)
        for i, det in enumerate(detections):
            keep = batch_idx == i
            true_cls = cls_all[keep]
            true_boxes = ops.xywh2xyxy(boxes_all[keep]) * scale
            pred_cls = det["cls"].detach().cpu()
            pred_boxes = det["bboxes"].detach().cpu().float()
            if len(true_cls) and len(pred_cls):
                tp = self.validator.match_predictions(pred_cls, true_cls, box_iou(true_boxes, pred_boxes)).numpy()
            else:
                tp = np.zeros((len(pred_cls), self.validator.niou), dtype=bool)
            true_np = true_cls.numpy()
            self.metrics.update_stats({
                "tp": tp,
                "conf": det["conf"].detach().cpu().numpy(),
                "pred_cls": pred_cls.numpy(),
                "target_cls": true_np,
                "target_img": np.unique(true_np),
                "im_name": f"{self.images}",
            })
            self.images += 1

    def results(self) -> dict[str, float]:
        """``mAP50``, ``mAP50-95``, ``precision``, ``recall`` and per class ``AP50/<name>``, ``AP50-95/<name>``
        (classes without ground truth have no AP and are left out; no ground truth at all gives NaN)."""
        if self.images == 0:
            raise ValueError("no images were evaluated")
        self.metrics.process(plot=False)
        box = self.metrics.box
        has_truth = self.metrics.nt_per_class is not None and int(np.sum(self.metrics.nt_per_class)) > 0
        nan = math.nan
        out = {"mAP50": float(box.map50) if has_truth else nan, "mAP50-95": float(box.map) if has_truth else nan,
               "precision": float(box.mp) if has_truth else nan, "recall": float(box.mr) if has_truth else nan}
        for i, c in enumerate(box.ap_class_index):
            name = self.names[int(c)]
            out[f"AP50/{name}"] = float(box.ap50[i])
            out[f"AP50-95/{name}"] = float(box.ap[i])
        return out
