"""Metrics of the fused image alone: EN, SD, SF, AG (the sources are accepted and ignored)."""

from __future__ import annotations

import numpy as np

from cldyn_cli.metrics.conventions import DEFAULT_CONVENTION, Convention, get_convention
from cldyn_cli.metrics.filters import as_float


def histogram_entropy(counts: np.ndarray, log=np.log) -> float:
    """Shannon entropy of a histogram (empty bins contribute 0)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


def entropy(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """EN, information entropy of the fused image, in bits. Higher is better.

    EN = -sum_l p_l log2 p_l over the 256-bin grey-level histogram p of F.

    Reference: J. W. Roberts, J. van Aardt, F. Ahmed, "Assessment of image fusion procedures using
    entropy, image quality, and multispectral classification", J. Appl. Remote Sens. 2(1), 2008.
    Convention: identical in vifb and cddfuse (log base 2, 256 bins of the 8-bit values).
    """
    get_convention(convention)
    counts = np.bincount(np.asarray(f, dtype=np.uint8).ravel(), minlength=256)
    return histogram_entropy(counts, np.log2)


def standard_deviation(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """SD, standard deviation of the fused image (contrast). Higher is better.

    SD = sqrt( (1 / HW) * sum (F - mean F)^2 ) on the 0..255 scale (population form, divisor H*W).

    Reference: Y.-J. Rao, "In-fibre Bragg grating sensors", Meas. Sci. Technol. 8(4), 1997 (as cited
    by VIFB). Convention: identical in vifb and cddfuse.
    """
    get_convention(convention)
    return float(np.std(as_float(f)))


def spatial_frequency(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """SF, spatial frequency of the fused image. Higher is better.

    RF^2 and CF^2 are the squared horizontal F(i,j) - F(i,j-1) and vertical F(i,j) - F(i-1,j)
    differences; SF = sqrt(RF^2 + CF^2).

    Reference: A. M. Eskicioglu, P. S. Fisher, "Image quality measures and their performance",
    IEEE Trans. Commun. 43(12), 1995.
    Convention: vifb divides each sum of squares by H*W (both sums, although there are only
    H*(W-1) and (H-1)*W differences); cddfuse averages each over its own number of differences,
    so cddfuse's SF is slightly larger.
    """
    conv = get_convention(convention)
    x = as_float(f)
    dx2 = np.square(np.diff(x, axis=1))
    dy2 = np.square(np.diff(x, axis=0))
    if conv.sf_normalisation == "pixels":
        return float(np.sqrt((dx2.sum() + dy2.sum()) / x.size))
    return float(np.sqrt(dx2.mean() + dy2.mean()))


def average_gradient(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """AG, average gradient of the fused image (sharpness). Higher is better.

    With MATLAB's ``gradient`` (central differences inside, one-sided at the borders) gx, gy:
    AG = sum sqrt((gx^2 + gy^2) / 2) / N.

    Reference: G. Cui, H. Feng, Z. Xu, Q. Li, Y. Chen, "Detail preserved fusion of visible and infrared
    images using regional saliency extraction and multi-scale image decomposition", Opt. Commun. 341, 2015.
    Convention: vifb divides by N = (H-1)*(W-1) (although the sum has H*W terms); cddfuse by N = H*W.
    """
    conv = get_convention(convention)
    x = as_float(f)
    gy, gx = np.gradient(x)
    total = np.sqrt((gx * gx + gy * gy) / 2.0).sum()
    h, w = x.shape
    n = (h - 1) * (w - 1) if conv.ag_denominator == "interior" else h * w
    return float(total / n)
