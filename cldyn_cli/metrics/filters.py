"""Signal-processing helpers with MATLAB semantics, vectorised with numpy/scipy.

Every helper works on the last two axes, so a stack of images is filtered in one call.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft


def as_float(img: np.ndarray) -> np.ndarray:
    """Image as float64 (no copy when it already is)."""
    return np.asarray(img, dtype=np.float64)


def normalize_255(img: np.ndarray) -> np.ndarray:
    """Zheng Liu's ``normalize1``: min-max stretch to 0..255, rounded (an all-zero image stays zero).

    A constant non-zero image divides 0 by 0 in the reference and so becomes NaN here too.
    """
    hi, lo = float(img.max()), float(img.min())
    if hi == 0.0 and lo == 0.0:
        return img.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.floor((img - lo) / (hi - lo) * 255.0 + 0.5)  # MATLAB's round (values are >= 0), same operation order


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)``: the 2-D window is its outer product.

    (fspecial also zeroes entries below eps * max; for the sizes and sigmas used here none is that small.)
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _centred_spectrum(k: np.ndarray, n: int, real: bool) -> np.ndarray:
    """DFT of length n of a symmetric odd-length kernel centred on index 0 (real because symmetric)."""
    c = (len(k) - 1) // 2
    padded = np.zeros(n)
    padded[:c + 1] = k[c:]
    padded[n - c:] = k[:c]
    return (sfft.rfft(padded) if real else sfft.fft(padded)).real


def filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``filter2(k' * k, img, 'valid')`` for a symmetric odd-length 1-D factor ``k``.

    Computed by FFT at the image's (fast-length) size: the circular wrap-around only reaches the
    border that 'valid' discards. The result matches direct filtering to ~1e-13 relative.
    An image smaller than the window gives an empty result, like MATLAB.
    """
    h, w = img.shape[-2:]
    n = len(k)
    if h < n or w < n:
        return np.zeros(img.shape[:-2] + (max(h - n + 1, 0), max(w - n + 1, 0)))
    c = (n - 1) // 2
    fh, fw = sfft.next_fast_len(h, real=True), sfft.next_fast_len(w, real=True)
    spectrum = _centred_spectrum(k, fh, real=False)[:, None] * _centred_spectrum(k, fw, real=True)[None, :]
    full = sfft.irfft2(sfft.rfft2(img, s=(fh, fw), axes=(-2, -1)) * spectrum, s=(fh, fw), axes=(-2, -1))
    return full[..., c:h - c, c:w - c]


def sobel_magnitude(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gx, gy, |g|) of ``filter2([-1 0 1; -2 0 2; -1 0 1], img, 'same')`` and its transpose (zero padding)."""
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)])
    rows = p[..., :-2, :] + 2.0 * p[..., 1:-1, :] + p[..., 2:, :]   # vertical [1 2 1] smoothing
    cols = p[..., :, :-2] + 2.0 * p[..., :, 1:-1] + p[..., :, 2:]   # horizontal [1 2 1] smoothing
    gx = rows[..., :, 2:] - rows[..., :, :-2]
    gy = cols[..., 2:, :] - cols[..., :-2, :]
    return gx, gy, np.sqrt(gx * gx + gy * gy)


def freq_radius(shape: tuple[int, int], scale_rows: float, scale_cols: float) -> np.ndarray:
    """Radius of MATLAB's ``freqspace([H W], 'meshgrid')`` grid scaled by (rows, cols), in rfft layout.

    freqspace gives 2k/N for the FFT frequency index k, so u = scale_cols * 2k/W, v = scale_rows * 2k/H;
    laid out like ``rfft2``'s output so that filtering is ``irfft2(rfft2(x) * S(r))``.
    """
    h, w = shape
    v = scale_rows * 2.0 * sfft.fftfreq(h)
    u = scale_cols * 2.0 * sfft.rfftfreq(w)
    return np.sqrt(v[:, None] ** 2 + u[None, :] ** 2)


def filter_frequency(img: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``real(ifft2(ifftshift(fftshift(fft2(img)) .* S)))`` for a real, even response S (rfft layout)."""
    shape = img.shape[-2:]
    return sfft.irfft2(sfft.rfft2(img, axes=(-2, -1)) * response, s=shape, axes=(-2, -1))


def filter_same_fft(img: np.ndarray, kernels: list[np.ndarray]) -> list[np.ndarray]:
    """``filter2(K, img, 'same')`` (zero padding) for symmetric odd square kernels, by FFT.

    The image's transform is shared by all kernels.
    """
    h, w = img.shape[-2:]
    size = kernels[0].shape[0]
    c = (size - 1) // 2
    fh, fw = sfft.next_fast_len(h + size - 1, real=True), sfft.next_fast_len(w + size - 1, real=True)
    spectrum = sfft.rfft2(img, s=(fh, fw), axes=(-2, -1))
    out = []
    for kernel in kernels:
        full = sfft.irfft2(spectrum * sfft.rfft2(kernel, s=(fh, fw)), s=(fh, fw), axes=(-2, -1))
        out.append(full[..., c:c + h, c:c + w])
    return out


def block_sums(img: np.ndarray, block: int) -> np.ndarray:
    """Sums over non-overlapping block x block tiles from the top-left, zero-padding partial tiles
    (MATLAB ``blkproc(img, [block block], @(x) sum(x(:)))``)."""
    h, w = img.shape[-2:]
    nh, nw = -(-h // block), -(-w // block)
    pad = [(0, 0)] * (img.ndim - 2) + [(0, nh * block - h), (0, nw * block - w)]
    p = np.pad(img, pad)
    return p.reshape(*p.shape[:-2], nh, block, nw, block).sum(axis=(-3, -1))
