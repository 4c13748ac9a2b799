"""Test setup: the network blocked, one thread, a tiny SegFormer (64x64) and small synthetic FMB scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny ops are fastest single-threaded (and the CI machine has 2 cores)

from mmseg_testdata import TINY_YAML


@pytest.fixture(autouse=True)
def offline(no_network: list[str]):
    """Every test runs with the network cut off: nothing (pretrained weights, configs) may be downloaded."""
    yield no_network


@pytest.fixture(scope="session")
def tiny_yaml() -> Path:
    return TINY_YAML


@pytest.fixture(scope="session")
def fmb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic scenes of 80x64 in the FMB layout (scene 1 is test, the other five train)."""
    from cldyn_cli.data.synth import write_dataset

    root = tmp_path_factory.mktemp("fmb")
    write_dataset(root, 6, 80, 64, seed=3, layout="fmb")
    return root


@pytest.fixture(scope="session")
def tiny_pth(tmp_path_factory: pytest.TempPathFactory, fmb: Path) -> Path:
    """The tiny SegFormer after a few training steps, saved as an MMEngine-style checkpoint."""
    from cldyn_plugin_mmseg.config import resolve
    from cldyn_plugin_mmseg.data import ImagesWithMasks
    from cldyn_plugin_mmseg.model import build_segmentor
    from cldyn_plugin_mmseg.training import TrainSettings, save_checkpoint, train_segmentor

    resolved = resolve(TINY_YAML, None)
    model = build_segmentor(resolved)
    data = ImagesWithMasks(fmb / "train" / "Visible", fmb / "train" / "Label", len(resolved.classes))
    state = train_segmentor(model, resolved, data, TrainSettings(steps=3, batch_size=2), torch.device("cpu"))
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    save_checkpoint(path, state, resolved)
    return path
