"""Metrics that compare the fused image with each source: MI, CC, Qcc, SCD, PSNR."""

from __future__ import annotations

import numpy as np

from cldyn_cli.metrics.conventions import DEFAULT_CONVENTION, Convention, get_convention
from cldyn_cli.metrics.filters import as_float
from cldyn_cli.metrics.single import histogram_entropy


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI(X; Y) in nats from the 256 x 256 joint histogram of two uint8 images."""
    joint = np.bincount(x.ravel().astype(np.intp) * 256 + y.ravel(), minlength=65536).reshape(256, 256)
    return (histogram_entropy(joint.sum(axis=1)) + histogram_entropy(joint.sum(axis=0))
            - histogram_entropy(joint))


def mutual_information(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """MI, mutual information between the fused image and the sources, in nats. Higher is better.

    MI = MI(A; F) + MI(B; F), MI(X; F) = H(X) + H(F) - H(X, F), with H from the 256-bin (joint)
    grey-level histograms and the natural logarithm.

    Reference: G. Qu, D. Zhang, P. Yan, "Information measure for performance of image fusion",
    Electron. Lett. 38(7), 2002.
    Convention: the same value in vifb and cddfuse, and in nats in both (VIFB's ``mutinf`` and
    scikit-learn's ``mutual_info_score`` both use ``log``; divide by ln 2 = 0.6931 for bits).
    VIFB first min-max stretches each image to 0..255 and rounds; on 8-bit input that maps distinct
    grey levels to distinct bins, and MI is invariant under such relabelling, so it changes nothing.
    """
    get_convention(convention)
    f8 = np.asarray(f, dtype=np.uint8)
    return float(_mutual_information(np.asarray(a, dtype=np.uint8), f8)
                 + _mutual_information(np.asarray(b, dtype=np.uint8), f8))


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (MATLAB ``corr2``); NaN when either image is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((xc * yc).sum() / np.sqrt((xc * xc).sum() * (yc * yc).sum()))


def correlation_coefficient(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """CC, mean correlation coefficient of the fused image with the sources. Higher is better.

    CC = (r(A, F) + r(B, F)) / 2, r the Pearson correlation
    r(X, F) = sum (X - mean X)(F - mean F) / sqrt( sum (X - mean X)^2 * sum (F - mean F)^2 ).

    Reference: as in CDDFuse's ``Evaluator.CC`` and SeAFusion's ``CC_evaluation`` (e.g. J. Ma, Y. Ma,
    C. Li, "Infrared and visible image fusion methods and applications: A survey", Inf. Fusion 45, 2019).
    Convention: identical in vifb (computed with MATLAB ``corr2``) and cddfuse. By definition the same
    number as Qcc, which is the name the CLDyN paper uses; both names are reported.
    NaN when F or a source is constant (0/0).
    """
    get_convention(convention)
    x = as_float(f)
    return (_corr(as_float(a), x) + _corr(as_float(b), x)) / 2.0


def qcc(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """Qcc, correlation-coefficient fusion quality as reported by CLDyN. Higher is better.

    Qcc = (CC(A, F) + CC(B, F)) / 2 with CC the Pearson correlation coefficient; it equals the CC
    metric (:func:`correlation_coefficient`) exactly, and is computed by it.

    Reference: CLDyN (CVPR 2026) evaluation; the correlation coefficient as a fusion metric in
    J. Ma et al., Inf. Fusion 45, 2019. Convention: identical in vifb and cddfuse.
    """
    return correlation_coefficient(a, b, f, convention)


def sum_of_correlations_of_differences(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """SCD, sum of the correlations of differences. Higher is better.

    SCD = r(F - B, A) + r(F - A, B), r the Pearson correlation (MATLAB ``corr2``): how much of each
    source's information the fused image carries beyond the other source.

    Reference: V. Aslantas, E. Bendes, "A new image quality metric for image fusion: The sum of the
    correlations of differences", AEU Int. J. Electron. Commun. 69(12), 2015 (``analysis_SCD.m``).
    Convention: identical in vifb and cddfuse. NaN when F equals a source (F - A is constant: 0/0),
    as in both references.
    """
    get_convention(convention)
    x, y, z = as_float(a), as_float(b), as_float(f)
    return _corr(z - y, x) + _corr(z - x, y)


def psnr(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """PSNR, peak signal-to-noise ratio of the fused image against the sources, in dB. Higher is better.

    Convention: cddfuse: MSE = (mean (A - F)^2 + mean (B - F)^2) / 2, PSNR = 10 log10(max(F)^2 / MSE)
    (the peak is the fused image's maximum, not 255).
    vifb: e(X) = sqrt(sum (X - F)^2) / (H W) (VIFB's ``mse`` helper divides the root of the sum of
    squares by the pixel count, i.e. it is RMSE / sqrt(HW), not the MSE), E = (e(A) + e(B)) / 2,
    PSNR = 20 log10(255 / sqrt(E)). Reproduced as published: VIFB's PSNR values are therefore far
    larger (about 50-65 dB) than textbook PSNR and depend on the image size.

    Reference: P. Jagalingam, A. V. Hegde, "A review of quality metrics for fused image", Aquatic
    Procedia 4, 2015. Infinite when F equals both sources.
    """
    conv = get_convention(convention)
    x, y, z = as_float(a), as_float(b), as_float(f)
    with np.errstate(divide="ignore"):
        if conv.psnr == "vifb":
            err = (np.sqrt(np.square(x - z).sum()) + np.sqrt(np.square(y - z).sum())) / (2.0 * z.size)
            return float(20.0 * np.log10(255.0 / np.sqrt(err)))
        mse = (np.square(x - z).mean() + np.square(y - z).mean()) / 2.0
        return float(10.0 * np.log10(z.max() ** 2 / mse))
