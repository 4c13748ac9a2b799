"""Salient-object metrics with PySODMetrics (the reference Python port of the usual MATLAB toolbox).

F-measure comes from ``FmeasureV2`` with an ``FmeasureHandler`` (the successor of the
deprecated ``Fmeasure``; same numbers). Per image, the prediction (sigmoid of the saliency
logits, as 8-bit) is compared with the mask binarised at 128; PySODMetrics min-max normalises
each prediction as the MATLAB code does. Reported (means over images):

- ``maxF``, ``meanF``, ``adpF``: F-measure with beta^2 = 0.3, maximum and mean over the 256
  thresholds of the mean curve, and with the adaptive threshold (twice the mean prediction);
- ``maxE``, ``meanE``, ``adpE``: enhanced-alignment measure, same three readings;
- ``Sm``: structure measure (alpha = 0.5); ``MAE``: mean absolute error (lower is better).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

METRICS = ("maxF", "meanF", "adpF", "maxE", "meanE", "adpE", "Sm", "MAE")
HIGHER_IS_BETTER = {name: name != "MAE" for name in METRICS}
BETA2 = 0.3


def to_uint8(x: Tensor) -> np.ndarray:
    """A [0, 1] map (H, W) as the 8-bit image the metrics expect."""
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class SodMetrics:
    """Accumulates PySODMetrics' F-measure, E-measure, S-measure and MAE over images."""

    def __init__(self) -> None:
        import py_sod_metrics as sod

        self._f = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=BETA2)})
        self._e = sod.Emeasure()
        self._s = sod.Smeasure()
        self._mae = sod.MAE()
        self.count = 0

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """One image: ``pred`` and ``gt`` are uint8 (H, W) of the same size."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and mask {gt.shape} differ in size")
        for metric in (self._f, self._e, self._s, self._mae):
            metric.step(pred=pred, gt=gt)
        self.count += 1

    def step_batch(self, probs: Tensor, masks: Tensor) -> None:
        """Probabilities and masks (B, 1, H, W) in [0, 1]."""
        for p, m in zip(probs, masks):
            self.step(to_uint8(p[0]), to_uint8(m[0]))

    def results(self) -> dict[str, float]:
        if self.count == 0:
            return {name: math.nan for name in METRICS}
        fm = self._f.get_results()["fm"]
        em = self._e.get_results()["em"]
        return {"maxF": float(np.max(fm["dynamic"])), "meanF": float(np.mean(fm["dynamic"])),
                "adpF": float(fm["adaptive"]),
                "maxE": float(np.max(em["curve"])), "meanE": float(np.mean(em["curve"])), "adpE": float(em["adp"]),
                "Sm": float(self._s.get_results()["sm"]), "MAE": float(self._mae.get_results()["mae"])}
