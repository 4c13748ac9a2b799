"""Hand-made VT5000-style scenes for the ctdnet plugin's data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_scene(root: Path, name: str, hw: tuple[int, int] = (40, 48),
               folders: tuple[str, str, str] = ("T", "RGB", "GT"), mask: np.ndarray | None = None) -> None:
    """One hand-made pair with a square mask, in the given (ir, vis, gt) folders under root."""
    h, w = hw
    rng = np.random.default_rng(len(name))
    ir_dir, vis_dir, gt_dir = (root / f for f in folders)
    save_png(ir_dir / f"{name}.png", (rng.random((h, w)) * 255).astype(np.uint8))
    save_png(vis_dir / f"{name}.png", (rng.random((h, w, 3)) * 255).astype(np.uint8))
    if mask is None:
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:h // 2, w // 4:w // 2] = 255
    save_png(gt_dir / f"{name}.png", mask)
