"""Dataset layouts (VT5000, T_GRAY, Edge/, generic ir/vis/gt) and clear errors for bad masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cldyn_cli.errors import UserError
from cldyn_plugin_ctdnet.data import SodDataset, collate
from cldyn_plugin_ctdnet.loss import mask_edges

from ctdnet_testdata import make_scene, save_png


def test_vt5000_layout_resized_with_derived_edges(vt5000: Path) -> None:
    data = SodDataset(vt5000, "train", 32)  # split names match case-insensitively
    assert len(data) == 5 and len(SodDataset(vt5000, "Test", 32)) == 1
    sample = data[0]
    assert sample.ir.shape == (1, 32, 32) and sample.vis.shape == (3, 32, 32)
    assert sample.target["mask"].shape == (1, 32, 32)
    assert torch.equal(sample.target["edge"], mask_edges(sample.target["mask"]))
    batch = collate([data[0], data[1]])
    assert batch.targets["mask"].shape == batch.targets["edge"].shape == (2, 1, 32, 32)
    assert batch.names == [data.pairs[0].name, data.pairs[1].name]
    full = SodDataset(vt5000, "train", None)[0]
    assert full.vis.shape == (3, 64, 64)


def test_t_gray_and_edge_folder(tmp_path: Path) -> None:
    split = tmp_path / "Train"
    make_scene(split, "a", folders=("T_GRAY", "RGB", "GT"))
    edge = np.zeros((40, 48), np.uint8)
    edge[0, 0] = 255
    save_png(split / "Edge" / "a_edge.png", edge)  # the authors' naming
    sample = SodDataset(tmp_path, "train", None)[0]
    assert sample.target["edge"].sum() == 1.0


def test_generic_folders_with_and_without_splits(tmp_path: Path) -> None:
    make_scene(tmp_path / "flat", "x", folders=("ir", "vis", "gt"))
    assert len(SodDataset(tmp_path / "flat", "train", 64)) == 1
    make_scene(tmp_path / "split" / "test", "y", folders=("ir", "vi", "gt"))
    assert SodDataset(tmp_path / "split", "test", 64)[0].name == "y"


def error(root: Path, split: str = "train") -> str:
    with pytest.raises(UserError) as info:
        SodDataset(root, split, 64)[0]
    return str(info.value)


def test_missing_mask_is_named(tmp_path: Path) -> None:
    make_scene(tmp_path / "Train", "a")
    make_scene(tmp_path / "Train", "b")
    (tmp_path / "Train" / "GT" / "b.png").unlink()
    assert "mask(s) missing" in error(tmp_path) and "b" in error(tmp_path)


def test_wrong_size_mask_is_named(tmp_path: Path) -> None:
    make_scene(tmp_path / "Train", "a")
    save_png(tmp_path / "Train" / "GT" / "a.png", np.zeros((10, 10), np.uint8))
    message = error(tmp_path)
    assert str(tmp_path / "Train" / "GT" / "a.png") in message and "10x10" in message and "48x40" in message


def test_unreadable_mask_is_named(tmp_path: Path) -> None:
    make_scene(tmp_path / "Train", "a")
    (tmp_path / "Train" / "GT" / "a.png").write_bytes(b"not a png")
    message = error(tmp_path)
    assert "cannot read image" in message and "a.png" in message


def test_colour_mask_is_refused(tmp_path: Path) -> None:
    make_scene(tmp_path / "Train", "a")
    colour = np.zeros((40, 48, 3), np.uint8)
    colour[..., 0] = 255
    save_png(tmp_path / "Train" / "GT" / "a.png", colour)
    assert "colour image" in error(tmp_path)


def test_layout_errors(tmp_path: Path) -> None:
    assert "does not exist" in error(tmp_path / "nowhere")
    make_scene(tmp_path / "Train", "a")
    assert "no 'val' split" in error(tmp_path, "val") and "Train" in error(tmp_path, "val")
    (tmp_path / "other" / "T").mkdir(parents=True)
    assert "no visible" in error(tmp_path / "other")


def test_fused_folder_pairs_by_name(vt5000: Path, tmp_path: Path) -> None:
    data = SodDataset(vt5000, "test", None)
    with pytest.raises(UserError, match="no images in"):
        SodDataset(vt5000, "test", None, images=tmp_path)
    for pair in data.pairs:
        save_png(tmp_path / f"{pair.name}.png", np.full((64, 64, 3), 7, np.uint8))
    sample = SodDataset(vt5000, "test", None, images=tmp_path)[0]
    assert sample.vis.shape == (3, 64, 64) and sample.target["mask"].shape == (1, 64, 64)
    assert sample.name == data.pairs[0].name and torch.allclose(sample.vis, torch.full_like(sample.vis, 7 / 255))
