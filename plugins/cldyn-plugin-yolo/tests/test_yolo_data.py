"""Detection data: letterboxing by hand, the M3FD and generic layouts, label errors that name the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import load
from cldyn_plugin_yolo.classes import identity
from cldyn_plugin_yolo.data import (PAD_VALUE, DetectionDataset, collate, letterbox, letterbox_boxes,
                                    letterbox_geometry, read_labels)
from yolo_testdata import NAMES, TINY_RTDETR_YAML, TINY_YAML

CLASSES = identity(NAMES)


def test_letterbox_by_hand() -> None:
    # A 100 wide, 50 high image into 64x64: scale 0.64 -> 64x32, 16 grey rows above and below.
    g = letterbox_geometry(50, 100, 64, 32, rect=False)
    assert (g.new_h, g.new_w, g.top, g.left, g.out_h, g.out_w) == (32, 64, 16, 0, 64, 64)
    image = torch.ones(3, 50, 100) * 0.25
    out = letterbox(image, g)
    assert out.shape == (3, 64, 64)
    assert torch.allclose(out[:, :16], torch.tensor(PAD_VALUE)) and torch.allclose(out[:, 48:], torch.tensor(PAD_VALUE))
    assert torch.allclose(out[:, 16:48], torch.tensor(0.25))
    # Box centred at (25, 25) px, 20x20 px -> (16, 16 + 16) px, 12.8x12.8 px on the 64x64 canvas.
    boxes = torch.tensor([[0.25, 0.5, 0.2, 0.4]])
    assert torch.allclose(letterbox_boxes(boxes, g), torch.tensor([[16 / 64, 32 / 64, 12.8 / 64, 12.8 / 64]]))
    # rect: only padded to a multiple of the stride -> 64x32, nothing added, boxes unchanged.
    r = letterbox_geometry(50, 100, 64, 32, rect=True)
    assert (r.out_h, r.out_w, r.top, r.left) == (32, 64, 0, 0)
    assert torch.allclose(letterbox_boxes(boxes, r), boxes)
    # A tall 90x60 image with rect: 64x43 (scale 64/90), padded to 64 wide, 10 columns left (21 // 2).
    t = letterbox_geometry(90, 60, 64, 32, rect=True)
    assert (t.new_h, t.new_w, t.out_h, t.out_w, t.top, t.left) == (64, 43, 64, 64, 0, 10)
    centre = letterbox_boxes(torch.tensor([[0.5, 0.5, 1.0, 1.0]]), t)
    assert torch.allclose(centre, torch.tensor([[(10 + 21.5) / 64, 0.5, 43 / 64, 1.0]]))
    # Already letterboxed: nothing changes.
    same = letterbox_geometry(64, 64, 64)
    assert same.identity and letterbox(image[:, :1, :1].expand(3, 64, 64), same).shape == (3, 64, 64)
    # stretch (RT-DETR): 50x100 -> 64x64 without padding; normalised boxes stay.
    s = letterbox_geometry(50, 100, 64, 32, stretch=True)
    assert (s.new_h, s.new_w, s.top, s.left, s.out_h, s.out_w) == (64, 64, 0, 0, 64, 64)
    assert torch.allclose(letterbox(image, s), torch.tensor(0.25)) and torch.equal(letterbox_boxes(boxes, s), boxes)


def test_m3fd_dataset_and_collate(m3fd: Path) -> None:
    backend = load(TaskOptions(weights=TINY_YAML, config=None))
    backend.imgsz = 64
    data = backend.dataset(m3fd, "train")
    assert len(data) == 5 and len(backend.dataset(m3fd, "test")) == 1
    sample = data[0]
    assert sample.ir.shape == (1, 64, 64) and sample.vis.shape == (3, 64, 64) and sample.name == "00000"
    # 80x64 -> scale 0.8 -> 64x51, top padding 6: check the boxes against the label file by hand.
    raw = np.loadtxt(m3fd / "labels" / "train" / "00000.txt", ndmin=2)
    expected = raw.copy()
    expected[:, 2] = (raw[:, 2] * 51 + 6) / 64
    expected[:, 4] = raw[:, 4] * 51 / 64
    assert np.allclose(sample.target.numpy(), expected, atol=1e-5)
    batch = backend.collate([data[i] for i in range(3)])
    assert batch.ir.shape == (3, 1, 64, 64) and batch.vis.shape == (3, 3, 64, 64)
    counts = [len(data[i].target) for i in range(3)]
    t = batch.targets
    assert t["batch_idx"].tolist() == sum(([float(i)] * n for i, n in enumerate(counts)), [])
    assert t["cls"].shape == (sum(counts), 1) and t["bboxes"].shape == (sum(counts), 4)
    loss = backend.loss(batch.vis, batch.targets)
    assert torch.isfinite(loss)


def test_rtdetr_sees_what_ultralytics_feeds_it(m3fd: Path, tmp_path: Path) -> None:
    """An RT-DETR's samples are the images and labels of Ultralytics' own RT-DETR dataset (stretched to
    a square, not letterboxed), up to the rounding of its 8-bit resize."""
    from ultralytics.cfg import DEFAULT_CFG
    from ultralytics.models.rtdetr.val import RTDETRDataset

    root = tmp_path / "yolo"
    shutil.copytree(m3fd / "vi" / "train", root / "images")
    shutil.copytree(m3fd / "labels" / "train", root / "labels")
    theirs = RTDETRDataset(img_path=str(root / "images"), imgsz=96, augment=False, hyp=DEFAULT_CFG,
                           data={"names": dict(enumerate(NAMES)), "channels": 3})
    config = tmp_path / "det.yaml"
    config.write_text("imgsz: 96\n")  # 80x64 scenes are enlarged: no antialiasing question
    ours = load(TaskOptions(weights=TINY_RTDETR_YAML, config=config)).dataset(m3fd, "train")
    assert len(theirs) == len(ours) == 5
    for i in range(len(ours)):
        item, sample = theirs[i], ours[i]
        assert Path(item["im_file"]).stem == sample.name and sample.vis.shape == (3, 96, 96)
        assert torch.allclose(item["img"].float() / 255, sample.vis, atol=1.01 / 255)
        assert torch.equal(item["cls"].view(-1), sample.target[:, 0])
        assert torch.allclose(item["bboxes"], sample.target[:, 1:], atol=1e-6)


def test_generic_layout_and_rect_collate(m3fd: Path, tmp_path: Path) -> None:
    root = tmp_path / "generic"
    for src, dst in (("ir", "ir"), ("vi", "vis"), ("labels", "labels")):
        shutil.copytree(m3fd / src / "train", root / dst)
    data = DetectionDataset(root, "whatever", CLASSES, imgsz=64, stride=32, rect=True)
    assert len(data) == 5 and data[0].vis.shape == (3, 64, 64)  # 80x64 -> 64x51 -> padded to 64x64
    small = data[0]
    small.vis, small.ir = small.vis[:, :32], small.ir[:, :32]  # pretend a 64x32 image
    small.target = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.5]])
    batch = collate([small, data[1]])
    assert batch.vis.shape == (2, 3, 64, 64)
    first = batch.targets["batch_idx"] == 0
    # The 64x32 image sits at the top of the 64x64 batch image: y and h halve.
    assert torch.allclose(batch.targets["bboxes"][first], torch.tensor([[0.5, 0.25, 0.5, 0.25]]))


def test_layout_errors(m3fd: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no split 'val'"):
        DetectionDataset(m3fd, "val", CLASSES, 64)
    with pytest.raises(UserError, match="does not exist"):
        DetectionDataset(tmp_path / "nowhere", "train", CLASSES, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="expected ir/, vi/"):
        DetectionDataset(tmp_path / "empty", "train", CLASSES, 64)


def test_missing_and_bad_labels_name_the_file(m3fd: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(m3fd, root)
    label = root / "labels" / "train" / "00002.txt"
    label.unlink()
    with pytest.raises(UserError, match=r"label file .*00002\.txt is missing"):
        DetectionDataset(root, "train", CLASSES, 64)
    label.write_text("1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2\n")
    with pytest.raises(UserError, match=r"00002\.txt:2: expected 5 values"):
        DetectionDataset(root, "train", CLASSES, 64)
    label.write_text("1 0.5 0.5 0.2 0.2\n\n9 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"00002\.txt:3: class 9 is not one of 0\.\.5"):
        DetectionDataset(root, "train", CLASSES, 64)
    label.write_text("1 50 60 20 20\n")
    with pytest.raises(UserError, match=r"00002\.txt:1: coordinates must be normalised"):
        DetectionDataset(root, "train", CLASSES, 64)
    label.write_text("car 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"00002\.txt:1: not a number"):
        DetectionDataset(root, "train", CLASSES, 64)
    label.write_text("")  # an empty label file is an image without objects
    assert read_labels(label, 6).shape == (0, 5)
    assert len(DetectionDataset(root, "train", CLASSES, 64)) == 5
