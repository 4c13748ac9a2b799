"""Deterministic IR / visible / fused test triples for tests, benchmarks and reference runs.

The images come from closed-form patterns plus an integer hash "noise", so they are identical on
every machine and numpy version (no random generator is involved). They carry texture everywhere
(no perfectly flat regions, where some reference metrics are dominated by round-off), do not span
the full 0..255 range (so the min-max normalisations of MI, Qcb and Qcv are exercised), and have
structure at several scales (warm blobs, stripes, a checkerboard, ramps).
"""

from __future__ import annotations

import numpy as np


def _hash_noise(height: int, width: int, salt: int) -> np.ndarray:
    """Integer hash of (row, column, salt) mapped to [-0.5, 0.5); uint64 arithmetic wraps by definition."""
    y, x = np.mgrid[0:height, 0:width].astype(np.uint64)
    v = x * np.uint64(73856093) + y * np.uint64(19349663) + np.uint64(salt) * np.uint64(83492791)
    v = v ^ (v >> np.uint64(13))
    v = v * np.uint64(0x9E3779B97F4A7C15)
    v = v ^ (v >> np.uint64(29))
    return (v % np.uint64(1024)).astype(np.float64) / 1024.0 - 0.5


def _to_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def make_triple(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ir, visible, fused) uint8 arrays of shape (height, width); ``seed`` varies the noise only."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    yn, xn = y / height, x / width
    ir = 40.0 + 30.0 * yn
    for cy, cx, s, amp in ((0.35, 0.3, 0.08, 170.0), (0.65, 0.7, 0.12, 140.0), (0.2, 0.8, 0.05, 120.0)):
        ir += amp * np.exp(-((xn - cx) ** 2 + (yn - cy) ** 2) / (2.0 * s * s))
    ir += 12.0 * _hash_noise(height, width, 3 * seed + 1)
    vis = 60.0 + 120.0 * xn + 40.0 * np.sin(2.0 * np.pi * x / 11.0) * (yn < 0.5)
    checker = ((np.floor(x / 6) + np.floor(y / 6)) % 2) * 50.0 - 25.0
    vis += np.where((yn > 0.6) & (xn < 0.5), checker, 0.0)
    vis += 20.0 * _hash_noise(height, width, 3 * seed + 2)
    ir8, vis8 = _to_u8(ir), _to_u8(vis)
    fused = 0.6 * ir8 + 0.5 * vis8 - 20.0 + 8.0 * _hash_noise(height, width, 3 * seed + 3)
    return ir8, vis8, _to_u8(fused)
