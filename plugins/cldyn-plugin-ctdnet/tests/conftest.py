"""Fixtures of the ctdnet plugin's tests: tiny VT5000 datasets and a random base fusion network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cldyn_cli.data.synth import write_dataset
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig

torch.set_num_threads(1)  # the CI machine has 2 shared cores; tiny ops are fastest single-threaded

SIZE = 64


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
