"""Human-perception-inspired metrics Qcb (Chen-Blum) and Qcv (Chen-Varshney).

Both follow Zheng Liu's MATLAB fusion-metric toolbox as shipped in VIFB (``metricChenBlum.m``,
``metricChen.m``), including its choices of frequency scaling, filter truncation and zero padding.
Neither is in CDDFuse's Evaluator, so both conventions use these definitions.
"""

from __future__ import annotations

import numpy as np

from cldyn_cli.metrics.conventions import DEFAULT_CONVENTION, Convention, get_convention
from cldyn_cli.metrics.filters import (as_float, block_sums, filter_frequency, filter_same_fft, freq_radius,
                                       normalize_255, sobel_magnitude)


def _gaussian_31(sigma: float) -> np.ndarray:
    """The toolbox's ``gaussian2d``: 31 x 31, exp(-(x^2 + y^2) / 2 sigma^2) / (2 pi sigma^2), not renormalised."""
    x = np.arange(-15.0, 16.0)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return np.outer(g, g) / (2.0 * np.pi * sigma * sigma)


_G1, _G2 = _gaussian_31(2.0), _gaussian_31(4.0)


def _normalised(a, b, f) -> np.ndarray:
    """(3, H, W) stack of A, B, F, each min-max stretched to 0..255 on its own."""
    return np.stack([normalize_255(as_float(x)) for x in (a, b, f)])


def qcb(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """Qcb, Chen-Blum perceptual contrast-preservation quality. Higher is better (at most 1).

    Each image is min-max stretched to 0..255 and rounded, then filtered in the frequency domain by
    the DoG contrast-sensitivity function S(r) = exp(-(r/f0)^2) - a exp(-(r/f1)^2), f0 = 15.3870,
    f1 = 1.3456, a = 0.7622, with r = sqrt(u^2 + v^2) on ``freqspace`` scaled by W/30 and H/30
    (r = k/15 for FFT frequency index k). Local contrast C = |G1 * I / G2 * I - 1| with G1, G2 the
    31 x 31 Gaussians of sigma 2 and 4 (unnormalised, zero-padded 'same' filtering); masked contrast
    C' = C^3 / (C^2 + 1e-4). Preservation Q_SF = min(C'_S, C'_F) / max(C'_S, C'_F); saliency
    lambda_A = C'_A^2 / (C'_A^2 + C'_B^2) (likewise B); Qcb = mean(lambda_A Q_AF + lambda_B Q_BF).

    Reference: Y. Chen, R. S. Blum, "A new automated quality assessment algorithm for image fusion",
    Image Vis. Comput. 27(10), 2009. Convention: identical in vifb and cddfuse (VIFB's code).
    NaN where the reference divides 0 by 0 (a constant image, or a pixel with zero contrast in all
    three images). In flat regions the reference's contrast is floating-point round-off, so there
    its map (and ours) is noise; textured images agree to 1e-6.
    """
    get_convention(convention)
    imgs = _normalised(a, b, f)
    r = freq_radius(imgs.shape[-2:], imgs.shape[-2] / 30.0, imgs.shape[-1] / 30.0)
    csf = np.exp(-(r / 15.3870) ** 2) - 0.7622 * np.exp(-(r / 1.3456) ** 2)
    filtered = filter_frequency(imgs, csf)
    num, den = filter_same_fft(filtered, [_G1, _G2])
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.abs(num / den - 1.0)
        cp = c ** 3 / (c * c + 1e-4)
        ca, cb, cf = cp
        q_af = np.where(ca < cf, ca / cf, cf / ca)
        q_bf = np.where(cb < cf, cb / cf, cf / cb)
        w = ca * ca + cb * cb
        return float(((ca * ca / w) * q_af + (cb * cb / w) * q_bf).mean())


def qcv(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """Qcv, Chen-Varshney regional perceptual distortion. LOWER is better (0 when F equals both).

    Each image is min-max stretched to 0..255 and rounded. Edge strength g = |Sobel| (zero-padded
    'same'); per 16 x 16 block w (from the top-left, partial blocks zero-padded) the saliency is
    lambda_S(w) = sum_w g_S^5. The differences A - F and B - F are filtered by the Mannos-Sakrison
    CSF 2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1), r on ``freqspace`` scaled by W/8 and H/8 (r = k/4
    for FFT frequency index k), and D_S(w) = sum_w (filtered)^2 / 256.
    Qcv = sum_w (lambda_A D_A + lambda_B D_B) / sum_w (lambda_A + lambda_B).

    Reference: H. Chen, P. K. Varshney, "A human perception inspired quality metric for image fusion
    based on regional information", Inf. Fusion 8(2), 2007. Convention: identical in vifb and
    cddfuse (VIFB's code: window 16, alpha = 5, Mannos-Sakrison filter; a block's D is divided by
    256 even when it is a zero-padded partial block). NaN when both sources are constant.
    """
    get_convention(convention)
    imgs = _normalised(a, b, f)
    sources, fused = imgs[:2], imgs[2]
    _, _, g = sobel_magnitude(sources)
    saliency = block_sums(g ** 5, 16)
    r = freq_radius(imgs.shape[-2:], imgs.shape[-2] / 8.0, imgs.shape[-1] / 8.0)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    diff = filter_frequency(sources - fused, csf)
    distortion = block_sums(diff * diff, 16) / 256.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((saliency * distortion).sum() / saliency.sum())
