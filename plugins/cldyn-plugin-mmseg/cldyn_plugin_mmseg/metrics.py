"""mIoU, per-class IoU, mAcc and aAcc with MMSegmentation's own metric (``mmseg.evaluation.IoUMetric``).

``IoUMetric.process`` accumulates per-image intersection/union histograms exactly as MMSeg's test
loop does; the totals go through ``IoUMetric.total_area_to_metrics``. The values are reported as
fractions in [0, 1] (MMSeg prints percentages), unrounded; a class that appears neither in the
ground truth nor in the predictions has no IoU (NaN) and is left out of the means, as in MMSeg.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from cldyn_plugin_mmseg.data import IGNORE_INDEX


class SegScores:
    """Accumulates predictions (B, H, W) against ground truth (B, H, W) for one evaluation."""

    def __init__(self, classes: list[str], ignore_index: int = IGNORE_INDEX) -> None:
        from mmseg.evaluation import IoUMetric

        self.classes = list(classes)
        self.metric = IoUMetric(ignore_index=ignore_index, iou_metrics=["mIoU"], prefix="seg")
        self.metric.dataset_meta = {"classes": self.classes}

    def add(self, pred: Tensor, truth: Tensor) -> None:
        samples = [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": t[None]}}
                   for p, t in zip(pred.cpu(), truth.cpu())]
        self.metric.process({}, samples)

    def result(self) -> dict[str, float]:
        """``mIoU``, ``mAcc``, ``aAcc`` and ``IoU.<class>`` per class."""
        from mmseg.evaluation import IoUMetric

        n = len(self.classes)
        if not self.metric.results:
            return {"mIoU": math.nan, "mAcc": math.nan, "aAcc": math.nan,
                    **{f"IoU.{c}": math.nan for c in self.classes}}
        totals = [sum(column) for column in zip(*self.metric.results)]
        per_class: dict[str, Any] = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
        iou = np.asarray(per_class["IoU"], dtype=np.float64).reshape(n)
        acc = np.asarray(per_class["Acc"], dtype=np.float64).reshape(n)
        a_acc = float(np.asarray(per_class["aAcc"], dtype=np.float64))
        out = {"mIoU": _nanmean(iou), "mAcc": _nanmean(acc), "aAcc": a_acc}
        out.update({f"IoU.{name}": float(value) for name, value in zip(self.classes, iou)})
        return out


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan
