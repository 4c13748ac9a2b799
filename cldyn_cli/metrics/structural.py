"""Structure and information-fidelity metrics from local window statistics: SSIM, VIF."""

from __future__ import annotations

import numpy as np

from cldyn_cli.metrics.conventions import DEFAULT_CONVENTION, Convention, get_convention
from cldyn_cli.metrics.filters import as_float, filter_valid, gaussian_1d


def _ssim_window(conv: Convention) -> np.ndarray:
    if conv.ssim_window == "gaussian":
        return gaussian_1d(conv.ssim_size, conv.ssim_sigma)
    return np.full(conv.ssim_size, 1.0 / conv.ssim_size)


def structural_similarity(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """SSIM, structural similarity of the fused image to the sources, summed over both. Higher is better.

    SSIM = mean SSIM(A, F) + mean SSIM(B, F), each the mean over every fully-inside window position
    ("valid" filtering) of
    (2 mu_x mu_f + C1)(2 s_xf + C2) / ((mu_x^2 + mu_f^2 + C1)(s_x^2 + s_f^2 + C2)),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, with windowed means and (co)variances.
    The maximum is therefore 2, not 1.

    Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
    error visibility to structural similarity", IEEE Trans. Image Process. 13(4), 2004.
    Convention: vifb uses an 11 x 11 Gaussian window (sigma 1.5, normalised), L = 255 and biased
    (co)variances. cddfuse reproduces CDDFuse, which sums two ``skimage.metrics.structural_similarity``
    calls on float32 images of 0..255 values without ``data_range``: scikit-image then took the data
    range of the float dtype, (-1, 1), so L = 2 (C1 = 4e-4, C2 = 3.6e-3, almost no stabilisation),
    with its defaults of a 7 x 7 uniform window and sample (co)variances (factor 49/48).
    We compute in float64; the float32 reference agrees to better than 1e-3 relative on textured
    images, but in perfectly flat regions its values are dominated by float32 round-off.
    """
    conv = get_convention(convention)
    k = _ssim_window(conv)
    c1 = (0.01 * conv.ssim_data_range) ** 2
    c2 = (0.03 * conv.ssim_data_range) ** 2
    z = as_float(f)
    srcs = np.stack([as_float(a), as_float(b)])
    mu_x, mu_f = filter_valid(srcs, k), filter_valid(z, k)
    xx, ff, xf = filter_valid(srcs * srcs, k), filter_valid(z * z, k), filter_valid(srcs * z, k)
    norm = conv.ssim_size ** 2 / (conv.ssim_size ** 2 - 1.0) if conv.ssim_sample_covariance else 1.0
    var_x = norm * (xx - mu_x * mu_x)
    var_f = norm * (ff - mu_f * mu_f)
    cov = norm * (xf - mu_x * mu_f)
    ssim_map = ((2.0 * mu_x * mu_f + c1) * (2.0 * cov + c2)
                / ((mu_x * mu_x + mu_f * mu_f + c1) * (var_x + var_f + c2)))
    return float(ssim_map.mean(axis=(-2, -1)).sum())


def _vif_scale_terms(ref: np.ndarray, dist: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-reference (numerator, denominator) sums of one VIF scale; ref is stacked (n, h, w)."""
    eps, sigma_nsq = 1e-10, 2.0
    mu1, mu2 = filter_valid(ref, k), filter_valid(dist, k)
    s1 = np.maximum(filter_valid(ref * ref, k) - mu1 * mu1, 0.0)
    s2 = np.broadcast_to(np.maximum(filter_valid(dist * dist, k) - mu2 * mu2, 0.0), s1.shape)
    s12 = filter_valid(ref * dist, k) - mu1 * mu2
    g = s12 / (s1 + eps)
    sv = s2 - g * s12
    flat1 = s1 < eps
    g[flat1] = 0.0
    sv[flat1] = s2[flat1]
    s1[flat1] = 0.0
    flat2 = s2 < eps
    g[flat2] = 0.0
    sv[flat2] = 0.0
    neg = g < 0
    sv[neg] = s2[neg]
    g[neg] = 0.0
    np.maximum(sv, eps, out=sv)
    num = np.log10(1.0 + g * g * s1 / (sv + sigma_nsq)).sum(axis=(-2, -1))
    den = np.log10(1.0 + s1 / sigma_nsq).sum(axis=(-2, -1))
    return num, den


def visual_information_fidelity(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """VIF, pixel-domain multiscale visual information fidelity, summed over both sources. Higher is better.

    VIF = VIFP(A, F) + VIFP(B, F). VIFP(R, D) = sum_s sum log10(1 + g^2 s_R^2 / (s_V^2 + 2))
    / sum_s sum log10(1 + s_R^2 / 2) over 4 scales s, with local Gaussian statistics (window N = 17, 9,
    5, 3, sigma N/5, "valid"), gain g = s_RD / s_R^2, distortion variance s_V^2 = s_D^2 - g s_RD,
    noise variance 2, and between scales a low-pass + 2x decimation; the LIVE code's guards (1e-10
    thresholds, negative gains set to 0) are reproduced.

    Reference: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE Trans. Image
    Process. 15(2), 2006 (LIVE ``vifp_mscale.m``), applied to fusion as in Han et al., Inf. Fusion 14, 2013.
    Convention: identical in vifb (VIFB has no VIF; the MATLAB original ``vifp_mscale`` is used) and
    cddfuse (whose ``Evaluator.VIFF`` is a Python port of the same code, despite its name: it is not
    Han's VIFF). A flat source gives 0/0 for its term: NaN in vifb (as MATLAB), 1 in cddfuse (CDDFuse
    replaces NaN by 1). Scales whose windows no longer fit the image add nothing, as with MATLAB's
    empty 'valid' results; all four scales need at least 41 x 41 pixels.
    """
    conv = get_convention(convention)
    ref = np.stack([as_float(a), as_float(b)])
    dist = as_float(f)
    num = np.zeros(2)
    den = np.zeros(2)
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        k = gaussian_1d(n, n / 5.0)
        if scale > 1 and min(dist.shape) >= n:
            ref = filter_valid(ref, k)[..., ::2, ::2]
            dist = filter_valid(dist, k)[..., ::2, ::2]
        if min(dist.shape) < n:  # MATLAB's 'valid' gives empty maps from here on: they add nothing
            break
        sn, sd = _vif_scale_terms(ref, dist, k)
        num += sn
        den += sd
    with np.errstate(invalid="ignore", divide="ignore"):
        vifp = num / den
    if conv.vif_nan_as_one:
        vifp = np.where(np.isnan(vifp), 1.0, vifp)
    return float(vifp.sum())
