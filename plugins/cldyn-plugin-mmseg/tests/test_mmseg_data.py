"""Datasets (FMB and generic layouts), mask checks with clear errors, and MMSeg's IoU metric by hand."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cldyn_cli.errors import UserError
from cldyn_plugin_mmseg.data import SegmentationPairs, collate, find_layout, read_mask
from cldyn_plugin_mmseg.metrics import SegScores


def test_fmb_dataset_resizes_and_collates(fmb: Path) -> None:
    data = SegmentationPairs(fmb, "train", 7, (64, 64))
    assert len(data) == 5
    sample = data[0]
    assert sample.ir.shape == (1, 64, 64) and sample.vis.shape == (3, 64, 64) and sample.target.shape == (64, 64)
    assert sample.target.dtype == torch.int64 and int(sample.target.max()) < 7
    original = np.asarray(Image.open(fmb / "train" / "Label" / f"{sample.name}.png"))
    assert set(np.unique(sample.target.numpy())) <= set(np.unique(original))  # nearest: no blended classes
    batch = collate([data[0], data[1]])
    assert batch.ir.shape == (2, 1, 64, 64) and batch.targets.shape == (2, 64, 64)
    assert len(SegmentationPairs(fmb, "test", 7, None)) == 1
    assert SegmentationPairs(fmb, "test", 7, None)[0].vis.shape == (3, 64, 80)


def test_generic_layout_with_and_without_splits(tmp_path: Path) -> None:
    from cldyn_cli.data.synth import write_dataset

    flat = tmp_path / "flat"
    write_dataset(flat, 3, 64, 48, seed=1, layout="pairs")  # ir/ vis/ masks/ (and more)
    assert find_layout(flat, "train") == (flat / "ir", flat / "vis", flat / "masks")
    assert len(SegmentationPairs(flat, "train", 7, (32, 32))) == 3
    split = tmp_path / "split"
    for name in ("ir", "vis", "masks"):
        shutil.copytree(flat / name, split / "val" / name)
    assert len(SegmentationPairs(split, "val", 7, None)) == 3
    with pytest.raises(UserError, match="no segmentation data for split 'train'"):
        SegmentationPairs(split, "train", 7, None)


def _copy(fmb: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(fmb / "test", root / "test")
    return root


def test_bad_masks_are_user_errors_naming_the_file(fmb: Path, tmp_path: Path) -> None:
    root = _copy(fmb, tmp_path)
    label = next((root / "test" / "Label").glob("*.png"))
    mask = np.asarray(Image.open(label)).copy()
    mask[0, 0] = 9
    Image.fromarray(mask).save(label)
    data = SegmentationPairs(root, "test", 7, (64, 64))
    with pytest.raises(UserError, match=rf"{label.name}.*\[9\] outside 0\.\.6.*num_classes"):
        data[0]
    mask[0, 0] = 255  # ignored: fine
    Image.fromarray(mask).save(label)
    assert int(data[0].target.max()) == 255
    colour = np.stack([mask, mask * 0, mask], axis=-1)
    Image.fromarray(colour).save(label)
    with pytest.raises(UserError, match=rf"{label.name} is a colour image"):
        data[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(label)
    with pytest.raises(UserError, match=rf"mask {label}: .*sizes differ"):
        data[0]
    label.write_bytes(b"broken")
    with pytest.raises(UserError, match=rf"cannot read mask {label}"):
        data[0]
    label.unlink()
    with pytest.raises(UserError, match="have no mask"):
        SegmentationPairs(root, "test", 7, None)
    with pytest.raises(UserError, match="does not exist"):
        SegmentationPairs(tmp_path / "nowhere", "test", 7, None)


def test_gray_mask_saved_as_rgb_and_palette_masks_are_read(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [2, 255]], np.uint8)
    Image.fromarray(np.stack([idx] * 3, -1)).save(tmp_path / "rgb.png")
    pal = Image.fromarray(idx, mode="L").convert("P")
    pal.save(tmp_path / "pal.png")
    assert read_mask(tmp_path / "rgb.png", 3).tolist() == [[0, 1], [2, 255]]
    assert read_mask(tmp_path / "pal.png", 3).tolist() == [[0, 1], [2, 255]]


def test_iou_metric_on_a_hand_made_case() -> None:
    truth = torch.tensor([[[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1],
                          [0, 0, 1, 0],
                          [2, 1, 2, 0]]])
    scores = SegScores(["bg", "a", "b", "absent"])
    scores.add(pred, truth)
    out = scores.result()
    # Ignored pixels (255) count nowhere; the same numbers by hand:
    keep = truth != 255
    ious, accs = [], []
    for c in range(3):
        t, p = (truth == c) & keep, (pred == c) & keep
        ious.append((t & p).sum().item() / (t | p).sum().item())
        accs.append((t & p).sum().item() / t.sum().item())
    assert out["IoU.bg"] == pytest.approx(ious[0]) and ious[0] == pytest.approx(3 / 5)
    assert out["IoU.a"] == pytest.approx(ious[1]) and ious[1] == pytest.approx(1 / 2)
    assert out["IoU.b"] == pytest.approx(ious[2]) and ious[2] == pytest.approx(1 / 2)
    assert math.isnan(out["IoU.absent"])  # in neither truth nor prediction: left out of the mean
    assert out["mIoU"] == pytest.approx(np.mean(ious))
    assert out["mAcc"] == pytest.approx(np.mean(accs))
    assert out["aAcc"] == pytest.approx(7 / 10)


def test_evaluate_through_the_backend(tiny_pth: Path, fmb: Path) -> None:
    """The generic evaluate contract: perfect predictions give mIoU 1, the network's own are in [0, 1]."""
    from cldyn_cli.tasks import TaskOptions
    from cldyn_plugin_mmseg.backend import load

    backend = load(TaskOptions(weights=tiny_pth))
    data = backend.dataset(fmb, "train")
    batch = backend.collate([data[i] for i in range(len(data))])
    metrics = backend.evaluate([(batch.vis, batch.targets)])
    assert {"mIoU", "mAcc", "aAcc", "IoU.person"} <= set(metrics)
    assert 0 <= metrics["mIoU"] <= 1 and 0 <= metrics["aAcc"] <= 1
    backend.predict = lambda fused, size=None: batch.targets  # an oracle
    assert backend.evaluate([(batch.vis, batch.targets)])["mIoU"] == pytest.approx(1.0)
