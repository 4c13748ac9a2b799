"""Writing generated test images to disk (8/16-bit gray, RGB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_gray(path: Path, arr: np.ndarray, bits: int = 8) -> Path:
    """Save a [0, 1] float array as an 8- or 16-bit grayscale image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray((arr * 65535 + 0.5).astype(np.uint16)).save(path)
    else:
        Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def save_rgb(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).save(path)
    return path
