"""Fixtures of the ctdnet plugin's tests: tiny VT5000 datasets and a random base fusion network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cldyn_cli.data.synth import write_dataset
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig

torch.set_num_threads(1)  # the CI machine has 2 shared cores; tiny ops are fastest single-threaded

SIZE = 64


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def vt5000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic 64x64 scenes in the VT5000 layout: five in Train/, one in Test/."""
    root = tmp_path_factory.mktemp("vt5000")
    write_dataset(root, 6, SIZE, SIZE, seed=3, layout="vt5000")
    return root


@pytest.fixture(scope="session")
def base_vfn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small randomly initialised base network (the shipped model may not exist yet)."""
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    torch.manual_seed(0)
    save_vfn(VFN(VFNConfig(blocks=2)), path, {"note": "random, for tests"})
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
