"""Detection data: the M3FD layout, YOLO text labels, letterboxing and Ultralytics-style batches.

Layouts (``root`` is what ``--data`` names):

- M3FD: ``ir/{train,test}/``, ``vi/{train,test}/`` (or ``vis/``), ``labels/{train,test}/*.txt``;
- generic: ``ir/``, ``vis/`` (or ``vi/``) and ``labels/`` without split folders (every split reads all).

A label file holds one ``class cx cy w h`` line per object, coordinates normalised to [0, 1] (an
empty file means no objects). Its class numbers index the data's class names; the dataset renumbers
them to the detector's classes (a :class:`classes.ClassMapping`) and leaves out dropped classes.
Images are letterboxed the way the detector sees them: scaled so the longer side is ``imgsz``, then
padded with grey (114) to ``imgsz x imgsz`` (``rect: false``, as Ultralytics trains) or only up to
the next multiple of the stride (``rect: true``); the boxes move with them. An RT-DETR sees its
images stretched to ``imgsz x imgsz`` instead (``stretch``: Ultralytics' RT-DETR datasets and
predictor do so), which leaves normalised boxes as they are. Targets use Ultralytics'
batch form: ``batch_idx`` (N,), ``cls`` (N, 1) and ``bboxes`` (N, 4) normalised ``cx cy w h`` of the
batch's image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from cldyn_cli.plugin_api import Batch, Sample, UserError, find_pairs, read_image, read_infrared

from cldyn_plugin_yolo.classes import ClassMapping

PAD_VALUE = 114 / 255  # Ultralytics' letterbox grey
SPLIT_NAMES = ("train", "val", "test")
_VIS_DIRS = ("vi", "vis")
_TOLERANCE = 1e-3  # label coordinates a little outside [0, 1] (rounding) are clipped, not rejected


@dataclass(frozen=True)
class Geometry:
    """How one image of size (height, width) is letterboxed: resized to (new_h, new_w), placed at
    (top, left) on an (out_h, out_w) canvas."""

    height: int
    width: int
    new_h: int
    new_w: int
    top: int
    left: int
    out_h: int
    out_w: int

    @property
    def identity(self) -> bool:
        return (self.new_h, self.new_w, self.out_h, self.out_w, self.top, self.left) == \
            (self.height, self.width, self.height, self.width, 0, 0)


def letterbox_geometry(height: int, width: int, imgsz: int, stride: int = 32, rect: bool = False,
                       stretch: bool = False) -> Geometry:
    """Scale the longer side to ``imgsz``; pad to a square of ``imgsz`` or (rect) to multiples of ``stride``.

    ``imgsz`` must be a multiple of ``stride``; the image is centred (the extra pixel of an odd
    padding goes to the bottom/right). ``stretch``: resize to ``imgsz x imgsz`` without padding,
    whatever the aspect ratio (how Ultralytics feeds an RT-DETR).
    """
    if stretch:
        return Geometry(height, width, imgsz, imgsz, 0, 0, imgsz, imgsz)
    ratio = imgsz / max(height, width)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    if rect:
        out_h, out_w = math.ceil(new_h / stride) * stride, math.ceil(new_w / stride) * stride
    else:
        out_h = out_w = imgsz
    return Geometry(height, width, new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2, out_h, out_w)


def letterbox(images: Tensor, geometry: Geometry) -> Tensor:
    """Letterbox a (..., C, H, W) tensor; differentiable (bilinear, antialiased when shrinking)."""
    g = geometry
    if g.identity:
        return images
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:])
    if (g.new_h, g.new_w) != (g.height, g.width):
        # Antialiasing changes nothing when enlarging (and ONNX cannot express it): only when shrinking.
        shrinks = g.new_h < g.height or g.new_w < g.width
        x = F.interpolate(x, size=(g.new_h, g.new_w), mode="bilinear", align_corners=False, antialias=shrinks)
    x = F.pad(x, (g.left, g.out_w - g.new_w - g.left, g.top, g.out_h - g.new_h - g.top), value=PAD_VALUE)
    return x.reshape(*lead, *x.shape[-3:])


def letterbox_boxes(boxes: Tensor, geometry: Geometry) -> Tensor:
    """Normalised (N, 4) ``cx cy w h`` of the source image -> normalised boxes of the letterboxed one."""
    g = geometry
    if g.identity or boxes.numel() == 0:
        return boxes
    scale = boxes.new_tensor([g.new_w / g.out_w, g.new_h / g.out_h] * 2)  # the resize actually done
    shift = boxes.new_tensor([g.left / g.out_w, g.top / g.out_h, 0.0, 0.0])
    return boxes * scale + shift


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """A YOLO label file as an (N, 5) float32 array ``class cx cy w h``; mistakes name the file and line."""
    if not path.is_file():
        raise UserError(f"label file {path} is missing; every image needs a YOLO .txt label of the same name "
                        "(an empty file for an image without objects)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read label file {path}: {exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{number}"
        if len(parts) != 5:
            raise UserError(f"{where}: expected 5 values 'class cx cy w h', got {len(parts)}: {line.strip()[:60]!r}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise UserError(f"{where}: not a number in {line.strip()[:60]!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise UserError(f"{where}: values must be finite numbers: {line.strip()[:60]!r}")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise UserError(f"{where}: class {parts[0]} is not one of 0..{num_classes - 1}; "
                            "give the class names with --task-config (nc/names)")
        coords = values[1:]
        if any(v < -_TOLERANCE or v > 1 + _TOLERANCE for v in coords):
            raise UserError(f"{where}: coordinates must be normalised to [0, 1] (YOLO cx cy w h), got "
                            f"{' '.join(parts[1:])}")
        if coords[2] <= 0 or coords[3] <= 0:
            raise UserError(f"{where}: box width and height must be positive, got {parts[3]} {parts[4]}")
        rows.append([cls, *(min(max(v, 0.0), 1.0) for v in coords)])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def find_layout(root: Path, split: str) -> tuple[Path, Path, Path]:
    """(ir, visible, labels) folders of ``split`` under ``root``, in the M3FD or the generic layout."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; check --data")
    ir = root / "ir"
    vis = next((root / name for name in _VIS_DIRS if (root / name).is_dir()), None)
    labels = root / "labels"
    if not ir.is_dir() or vis is None:
        raise UserError(f"{root} is not a detection dataset: expected ir/, vi/ (or vis/) and labels/, split into "
                        "train/ and test/ (M3FD) or not")
    splits = sorted(p.name for p in ir.iterdir() if p.is_dir() and p.name in SPLIT_NAMES)
    if splits:
        if split not in splits:
            raise UserError(f"{root} has no split {split!r} (found {', '.join(splits)}); pick one of those")
        ir, vis, labels = ir / split, vis / split, labels / split
        for folder in (vis, labels):
            if not folder.is_dir():
                raise UserError(f"{folder} is missing; the M3FD layout needs ir/, vi/ and labels/ for split {split!r}")
    elif not labels.is_dir():
        raise UserError(f"{labels} is missing; put one YOLO .txt label per image there")
    return ir, vis, labels


def _chw(image: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


class DetectionDataset(Dataset):
    """Registered IR/visible pairs with YOLO labels, letterboxed; items are :class:`Sample` whose
    ``target`` is an (N, 5) tensor ``class cx cy w h`` (detector classes) normalised to the letterboxed image."""

    def __init__(self, root: Path, split: str, classes: ClassMapping, imgsz: int, stride: int = 32,
                 rect: bool = False, images: Path | None = None, stretch: bool = False) -> None:
        """``classes``: the labels' classes -> the detector's. ``images``: read the visible side from
        this folder instead (fused images, for scoring). ``stretch``: see :func:`letterbox_geometry`."""
        ir, vis, labels = find_layout(Path(root), split)
        self.pairs = find_pairs(ir, images or vis)
        self.imgsz, self.stride, self.rect, self.stretch = imgsz, stride, rect, stretch
        # Labels are small: read them all now, so a bad file stops the run before training starts.
        self.labels = [classes.relabel(read_labels(labels / f"{pair.name}.txt", len(classes.ids)))
                       for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        ir = _chw(read_infrared(pair.ir))
        vis = _chw(read_image(pair.vis))
        vis = vis.expand(3, -1, -1) if vis.shape[0] == 1 else vis
        if ir.shape[-2:] != vis.shape[-2:]:
            raise UserError(f"size mismatch for {pair.name!r}: infrared {tuple(ir.shape[-2:])} vs visible "
                            f"{tuple(vis.shape[-2:])}; register the images first")
        geometry = letterbox_geometry(*vis.shape[-2:], self.imgsz, self.stride, self.rect, self.stretch)
        target = torch.from_numpy(self.labels[index].copy())
        target[:, 1:] = letterbox_boxes(target[:, 1:], geometry)
        return Sample(ir=letterbox(ir, geometry).contiguous(), vis=letterbox(vis, geometry).contiguous(),
                      target=target, name=pair.name)


def pad_to(image: Tensor, height: int, width: int) -> Tensor:
    """Pad a (C, H, W) image at the bottom and right with the letterbox grey."""
    return F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]), value=PAD_VALUE)


def batch_targets(targets: list[Tensor], sizes: list[tuple[int, int]], height: int, width: int) -> dict[str, Tensor]:
    """Per-image (N_i, 5) normalised targets of images of ``sizes``, padded to (height, width) at the
    bottom/right -> Ultralytics' batch dict."""
    idx, cls, boxes = [], [], []
    for i, (target, (h, w)) in enumerate(zip(targets, sizes)):
        target = torch.as_tensor(target, dtype=torch.float32).reshape(-1, 5)
        idx.append(torch.full((len(target),), float(i)))
        cls.append(target[:, :1])
        boxes.append(target[:, 1:] * target.new_tensor([w / width, h / height] * 2))
    return {"batch_idx": torch.cat(idx) if idx else torch.zeros(0),
            "cls": torch.cat(cls) if cls else torch.zeros(0, 1),
            "bboxes": torch.cat(boxes) if boxes else torch.zeros(0, 4)}


def collate(samples: list[Sample]) -> Batch:
    """Stack samples (padding to the largest, for ``rect`` batches); targets in Ultralytics' form."""
    height = max(s.vis.shape[-2] for s in samples)
    width = max(s.vis.shape[-1] for s in samples)
    sizes = [tuple(s.vis.shape[-2:]) for s in samples]
    return Batch(ir=torch.stack([pad_to(s.ir, height, width) for s in samples]),
                 vis=torch.stack([pad_to(s.vis, height, width) for s in samples]),
                 targets=batch_targets([s.target for s in samples], sizes, height, width),  # type: ignore[arg-type]
                 names=[s.name for s in samples])
