"""Shared fixtures: small generated images and pairs on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imagefiles import save_gray, save_rgb

torch.set_num_threads(1)  # the CI machine has 2 cores; tiny ops are fastest single-threaded


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Three IR/visible pairs with structure (a bright square in IR, stripes in visible)."""
    rng = np.random.default_rng(0)
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    for i in range(3):
        h, w = 48 + 8 * i, 64
        ir = rng.uniform(0.1, 0.3, (h, w))
        ir[10:20, 10:25] = 0.9
        vis = np.stack([np.tile((np.arange(w) % 8 < 4) * 0.6 + 0.2, (h, 1))] * 3, axis=-1) * rng.uniform(0.8, 1, 3)
        save_gray(ir_dir / f"{i:03d}.png", ir)
        save_rgb(vis_dir / f"{i:03d}.PNG", vis)
    return ir_dir, vis_dir
