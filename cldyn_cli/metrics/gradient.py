"""Edge-preservation metric Qabf (Xydeas-Petrovic)."""

from __future__ import annotations

import numpy as np

from cldyn_cli.metrics.conventions import DEFAULT_CONVENTION, Convention, get_convention
from cldyn_cli.metrics.filters import as_float, sobel_magnitude

# Sigmoid parameters of the published metric (strength: T_g, k_g, D_g; orientation: T_a, k_a, D_a).
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def _orientation(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The references' atan(S_y / S_x), pi/2 where S_x == 0.

    They *convolve* (``conv2``) with [-1 0 1; -2 0 2; -1 0 1] and [1 2 1; 0 0 0; -1 -2 -1], which is
    S_x = -gx, S_y = gy for our correlation-based Sobel pair. The sign matters: the pi/2 given to
    S_x == 0 is compared with angles of either sign.
    """
    safe = np.where(gx == 0, 1.0, gx)
    return np.where(gx == 0, np.pi / 2, np.arctan(-gy / safe))


def _preservation(g_s, a_s, g_f, a_f, equal_scale: float) -> np.ndarray:
    """Q^{SF} edge preservation map of one source S in F."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(g_s > g_f, g_f / g_s, g_s / g_f)
    ratio = np.where(g_s == g_f, equal_scale * g_f, ratio)
    orient = 1.0 - np.abs(a_s - a_f) / (np.pi / 2)
    q_g = _TG / (1.0 + np.exp(_KG * (ratio - _DG)))
    q_a = _TA / (1.0 + np.exp(_KA * (orient - _DA)))
    return q_g * q_a


def qabf(a, b, f, convention: str | Convention = DEFAULT_CONVENTION) -> float:
    """Qabf (Q^{AB/F}), gradient-based edge-information preservation. Higher is better (max ~0.976).

    With 3x3 Sobel responses (zero-padded 'same' convolution) giving strength g and orientation
    alpha = atan(g_y / g_x) (pi/2 where g_x = 0) per pixel:
    G^{SF} = g_F / g_S if g_S > g_F else g_S / g_F, A^{SF} = 1 - |alpha_S - alpha_F| / (pi/2),
    Q^{SF} = T_g / (1 + e^{k_g (G - D_g)}) * T_a / (1 + e^{k_a (A - D_a)}) with
    T_g = 0.9994, k_g = -15, D_g = 0.5, T_a = 0.9879, k_a = -22, D_a = 0.8, and
    Qabf = sum (Q^{AF} g_A + Q^{BF} g_B) / sum (g_A + g_B).

    Reference: C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure", Electron.
    Lett. 36(4), 2000.
    Convention: both references set G^{SF} = g_F (not 1) where g_S == g_F, a quirk reproduced here.
    VIFB has multiplied the images by 255 at that point (``255*im2double`` of a double), so there
    G = 255 g_F on the 0..255 scale, while CDDFuse uses g_F itself; the two differ only where a
    source's and the fused image's Sobel strengths are exactly equal (by ~1e-4 per such pixel).
    """
    conv = get_convention(convention)
    gx, gy, g = sobel_magnitude(np.stack([as_float(a), as_float(b), as_float(f)]))
    angle = _orientation(gx, gy)
    q_af = _preservation(g[0], angle[0], g[2], angle[2], conv.qabf_equal_scale)
    q_bf = _preservation(g[1], angle[1], g[2], angle[2], conv.qabf_equal_scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((q_af * g[0] + q_bf * g[1]).sum() / (g[0] + g[1]).sum())
