"""The two named metric conventions and the parameters in which they differ.

A convention is data, not code: each metric has one implementation, and the few places where the
two reference implementations disagree are fields here. ``docs/metrics.md`` tabulates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Convention:
    """How one reference implementation computes the metrics that differ between references."""

    name: str
    reference: str
    sf_normalisation: Literal["pixels", "differences"]
    """SF: squared differences summed and divided by H*W ("pixels"), or averaged over the
    H*(W-1) horizontal and (H-1)*W vertical differences separately ("differences")."""
    ag_denominator: Literal["interior", "pixels"]
    """AG: sum of the gradient map divided by (H-1)*(W-1) ("interior") or by H*W ("pixels")."""
    psnr: Literal["vifb", "cddfuse"]
    """PSNR formula; see :func:`cldyn_cli.metrics.reference.psnr`."""
    ssim_window: Literal["gaussian", "uniform"]
    ssim_size: int
    ssim_sigma: float
    ssim_data_range: float
    ssim_sample_covariance: bool
    vif_nan_as_one: bool
    """VIF: a 0/0 term (flat source) stays NaN (MATLAB) or becomes 1 (CDDFuse)."""
    qabf_equal_scale: float
    """Qabf sets the strength ratio G = g_F where g_S == g_F; VIFB's code has pre-multiplied the
    images by 255 at that point (so G = 255 * g_F on our 0..255 scale), CDDFuse's has not."""


VIFB = Convention(
    name="vifb",
    reference="VIFB benchmark MATLAB metrics (xingchenzhang/VIFB, metrics/*.m; Qcb/Qcv from Zheng Liu's "
              "imageFusionMetrics); VIF = LIVE vifp_mscale, SCD = Aslantas' analysis_SCD, CC via corr2",
    sf_normalisation="pixels",
    ag_denominator="interior",
    psnr="vifb",
    ssim_window="gaussian",
    ssim_size=11,
    ssim_sigma=1.5,
    ssim_data_range=255.0,
    ssim_sample_covariance=False,
    vif_nan_as_one=False,
    qabf_equal_scale=255.0,
)

CDDFUSE = Convention(
    name="cddfuse",
    reference="MMIF-CDDFuse utils/Evaluator.py (Zhaozixiang1228/MMIF-CDDFuse) with scikit-image SSIM on "
              "float input (data_range 2); Qcb/Qcv, absent there, as in vifb",
    sf_normalisation="differences",
    ag_denominator="pixels",
    psnr="cddfuse",
    ssim_window="uniform",
    ssim_size=7,
    ssim_sigma=0.0,
    ssim_data_range=2.0,
    ssim_sample_covariance=True,
    vif_nan_as_one=True,
    qabf_equal_scale=1.0,
)

CONVENTIONS: dict[str, Convention] = {c.name: c for c in (VIFB, CDDFUSE)}

_COMMON_NOTES = {
    "EN": "Shannon entropy of the 256-bin histogram of F, log2 (bits)",
    "SD": "population standard deviation of F (divisor H*W), 0..255 scale",
    "MI": "MI(IR,F) + MI(VIS,F) from 256-bin joint histograms, natural log (nats)",
    "SCD": "corr(F-VIS, IR) + corr(F-IR, VIS) (Aslantas-Bendes); NaN if F equals a source",
    "VIF": "VIFP(IR,F) + VIFP(VIS,F), LIVE vifp_mscale (4 scales, Gaussian N=17/9/5/3, noise var 2)",
    "Qcb": "Chen-Blum, Zheng Liu's code: 0..255 min-max rescale, DoG CSF (f0 15.387, f1 1.3456, a .7622), "
           "31x31 Gaussians sigma 2/4, mean of the quality map",
    "Qcv": "Chen-Varshney, Zheng Liu's code: 0..255 min-max rescale, 16x16 blocks, alpha 5, "
           "Mannos-Sakrison CSF; lower is better",
    "Qcc": "(Pearson r(IR,F) + r(VIS,F)) / 2; same number as CC",
    "CC": "(Pearson r(IR,F) + r(VIS,F)) / 2; same number as Qcc",
}

_NOTES = {
    "vifb": {
        "SF": "sqrt((sum dx^2 + sum dy^2) / (H*W))",
        "AG": "MATLAB gradient, sum sqrt((gx^2+gy^2)/2) / ((H-1)*(W-1))",
        "Qabf": "Xydeas-Petrovic, 3x3 Sobel (zero padding), G = 255*g_F where g_S == g_F (VIFB quirk)",
        "SSIM": "SSIM(IR,F) + SSIM(VIS,F); 11x11 Gaussian sigma 1.5, L = 255, valid windows",
        "PSNR": "20 log10(255 / sqrt(mean_S sqrt(sum (S-F)^2) / (H*W))) (VIFB's formula, not textbook)",
    },
    "cddfuse": {
        "SF": "sqrt(mean dx^2 + mean dy^2)",
        "AG": "central differences (one-sided at borders), mean of sqrt((gx^2+gy^2)/2) over H*W",
        "Qabf": "Xydeas-Petrovic, 3x3 Sobel (zero padding), G = g_F where g_S == g_F",
        "SSIM": "SSIM(IR,F) + SSIM(VIS,F); scikit-image on float input: 7x7 uniform window, sample "
                "covariances, data_range 2 (C1 = 4e-4, C2 = 3.6e-3)",
        "PSNR": "10 log10(max(F)^2 / ((MSE(IR,F) + MSE(VIS,F)) / 2))",
    },
}


def metric_notes(convention: str | Convention) -> dict[str, str]:
    """One line per metric saying how it is computed under a convention (for outputs and docs)."""
    conv = get_convention(convention)
    notes = {**_COMMON_NOTES, **_NOTES[conv.name]}
    if conv.vif_nan_as_one:
        notes["VIF"] += "; a 0/0 term (flat source) counts as 1"
    return notes
DEFAULT_CONVENTION = VIFB.name


def get_convention(convention: str | Convention) -> Convention:
    """The :class:`Convention` for a name (``"vifb"``, ``"cddfuse"``) or the object itself."""
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(f"unknown metric convention {convention!r}; use one of "
                         f"{', '.join(CONVENTIONS)}") from None
