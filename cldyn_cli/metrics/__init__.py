"""Fusion-quality metrics on 8-bit grayscale images, under two named conventions.

Inputs: A (infrared), B (visible, as luminance Y) and F (fused), uint8 arrays of one shape (H, W).
Each metric is one function ``metric(a, b, f, convention="vifb") -> float``; :data:`METRICS`
maps the reported names to them, :data:`HIGHER_IS_BETTER` says which way is better (only Qcv is
lower-is-better). ``docs/metrics.md`` lists formulas, references and the two conventions:

* ``vifb`` (default): the MATLAB metrics of the VIFB benchmark (Qcb/Qcv from Zheng Liu's toolbox).
* ``cddfuse``: the Python ``utils/Evaluator.py`` of MMIF-CDDFuse.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from cldyn_cli.metrics.conventions import (CONVENTIONS, DEFAULT_CONVENTION, Convention,
                                           get_convention)
from cldyn_cli.metrics.gradient import qabf
from cldyn_cli.metrics.perceptual import qcb, qcv
from cldyn_cli.metrics.reference import (correlation_coefficient, mutual_information, psnr, qcc,
                                         sum_of_correlations_of_differences)
from cldyn_cli.metrics.single import average_gradient, entropy, spatial_frequency, standard_deviation
from cldyn_cli.metrics.structural import structural_similarity, visual_information_fidelity

Metric = Callable[..., float]

METRICS: dict[str, Metric] = {
    "EN": entropy,
    "SD": standard_deviation,
    "SF": spatial_frequency,
    "AG": average_gradient,
    "MI": mutual_information,
    "SCD": sum_of_correlations_of_differences,
    "VIF": visual_information_fidelity,
    "Qabf": qabf,
    "SSIM": structural_similarity,
    "Qcb": qcb,
    "Qcv": qcv,
    "Qcc": qcc,
    "CC": correlation_coefficient,
    "PSNR": psnr,
}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)

HIGHER_IS_BETTER: dict[str, bool] = {name: name != "Qcv" for name in METRICS}


def parse_metric_names(names: str | Iterable[str] | None) -> list[str]:
    """Metric names in registry order from a list or a comma-separated string (None: all).

    Matching is exact first, then case-insensitive; unknown names raise ValueError listing the choices.
    """
    if names is None:
        return list(METRIC_NAMES)
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    by_lower = {n.lower(): n for n in METRIC_NAMES}
    chosen = []
    for item in items:
        name = item if item in METRICS else by_lower.get(item.lower())
        if name is None:
            raise ValueError(f"unknown metric {item!r}; choose from {','.join(METRIC_NAMES)}")
        chosen.append(name)
    if not chosen:
        raise ValueError(f"no metrics named; choose from {','.join(METRIC_NAMES)}")
    return [n for n in METRIC_NAMES if n in chosen]


def _check(name: str, img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"{name} must be a 2-D uint8 array, got {img.dtype} of shape {img.shape}")
    if min(img.shape) < 2:
        raise ValueError(f"{name} is {img.shape[1]}x{img.shape[0]}; the metrics need at least 2x2 pixels")
    return img


def compute_all(a: np.ndarray, b: np.ndarray, f: np.ndarray, convention: str | Convention = DEFAULT_CONVENTION,
                metrics: str | Iterable[str] | None = None) -> dict[str, float]:
    """All (or the chosen) metrics for one triple: {name: value} in registry order.

    ``a`` infrared, ``b`` visible luminance, ``f`` fused: uint8 arrays of the same (H, W).
    Values may be NaN or inf where the reference formula is undefined (see each metric's docstring).
    """
    conv = get_convention(convention)
    a, b, f = _check("infrared image", a), _check("visible image", b), _check("fused image", f)
    if not a.shape == b.shape == f.shape:
        raise ValueError(f"image sizes differ: infrared {a.shape}, visible {b.shape}, fused {f.shape}")
    return {name: float(METRICS[name](a, b, f, conv)) for name in parse_metric_names(metrics)}


__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "Convention", "HIGHER_IS_BETTER", "METRICS", "METRIC_NAMES",
           "compute_all", "get_convention", "parse_metric_names"]
