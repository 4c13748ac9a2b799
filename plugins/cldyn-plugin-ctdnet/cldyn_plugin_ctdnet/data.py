"""Salient-object datasets: the VT5000 layout and generic ir/vis/gt folders.

- VT5000: ``{root}/{Train,Test}/{RGB, T (or T_GRAY), GT}/*``, optional ``Edge/`` (the authors'
  ``name_edge.png`` or ``name.png``). Split names match case-insensitively (``train`` -> ``Train``).
- Generic: ``{root}/{split}/{ir, vis, gt}`` or, without split folders, ``{root}/{ir, vis, gt}``
  (then every split is the whole folder). ``vi``/``visible``, ``infrared``/``thermal``,
  ``saliency``/``mask(s)`` are accepted too.

Files match by relative stem. Masks are grayscale, 0 = background, 255 = salient (soft values
allowed); a missing, unreadable, colour or wrongly sized mask is a one-line UserError naming it.
Edge maps, when there is no ``Edge/`` folder, are derived from the mask (``loss.mask_edges``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from cldyn_cli.plugin_api import Batch, Sample, UserError, find_pairs, image_size, is_image, read_image, read_infrared

from cldyn_plugin_ctdnet.loss import mask_edges

IR_NAMES = ("T", "T_GRAY", "ir", "IR", "infrared", "Infrared", "thermal")
VIS_NAMES = ("RGB", "rgb", "vis", "vi", "visible", "Visible")
GT_NAMES = ("GT", "gt", "saliency", "mask", "masks", "Mask")
EDGE_NAMES = ("Edge", "edge", "edges")
LAYOUT_HINT = ("expected {Train,Test}/{RGB,T,GT} (VT5000; T_GRAY, Edge/ optional) or ir/ vis/ gt/ folders, "
               "optionally inside split folders")


@dataclass(frozen=True)
class Folders:
    ir: Path
    vis: Path
    gt: Path
    edge: Optional[Path]


def _first(base: Path, names: tuple[str, ...]) -> Optional[Path]:
    return next((base / n for n in names if (base / n).is_dir()), None)


def _folders(base: Path) -> Optional[Folders]:
    ir, vis, gt = _first(base, IR_NAMES), _first(base, VIS_NAMES), _first(base, GT_NAMES)
    if ir is None and vis is None and gt is None:
        return None
    missing = [what for what, path in (("thermal (T, T_GRAY or ir)", ir), ("visible (RGB or vis)", vis),
                                       ("ground truth (GT or gt)", gt)) if path is None]
    if missing:
        raise UserError(f"{base} has no {' and no '.join(missing)} folder; {LAYOUT_HINT}")
    return Folders(ir, vis, gt, _first(base, EDGE_NAMES))  # type: ignore[arg-type]


def split_folders(root: Path, split: str) -> Folders:
    """The folders of ``split`` under ``root`` (a split folder, or root itself when it has none)."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; check the path")
    named = sorted(d for d in root.iterdir() if d.is_dir() and d.name.lower() == split.lower())
    if named:
        found = _folders(named[0])
        if found is None:
            raise UserError(f"{named[0]} has no image folders; {LAYOUT_HINT}")
        return found
    found = _folders(root)
    if found is None:
        splits = sorted(d.name for d in root.iterdir() if d.is_dir())
        have = f" (it has {', '.join(splits)})" if splits else ""
        raise UserError(f"{root} has no {split!r} split{have}; {LAYOUT_HINT}")
    return found


def index_images(folder: Path) -> dict[str, Path]:
    """Images under ``folder`` by relative stem (``sub/name``)."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p
            for p in sorted(folder.rglob("*")) if p.is_file() and is_image(p) and not p.name.startswith(".")}


def _sample(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def read_mask(path: Path, expect_hw: Optional[tuple[int, int]] = None, what: str = "mask") -> Tensor:
    """A grayscale mask (1, H, W) in [0, 1]; colour, unreadable or wrongly sized files are UserErrors."""
    if not path.is_file():
        raise UserError(f"{what} {path} is missing")
    img = read_image(path)  # names the file when it cannot be decoded
    if img.ndim == 3:
        if not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])):
            raise UserError(f"{what} {path} is a colour image; saliency {what}s must be grayscale "
                            "(0 background, 255 salient)")
        img = img[..., 0]
    if expect_hw is not None and img.shape != tuple(expect_hw):
        raise UserError(f"{what} {path} is {img.shape[1]}x{img.shape[0]}, but its image is "
                        f"{expect_hw[1]}x{expect_hw[0]}; masks must match their images")
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]


def resize(t: Tensor, size: int) -> Tensor:
    """(C, H, W) -> (C, size, size), bilinear (antialiased when shrinking), like the authors' cv2 resize."""
    if tuple(t.shape[-2:]) == (size, size):
        return t
    shrink = t.shape[-2] > size or t.shape[-1] > size
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[0]


@dataclass
class RawSample:
    """One scene at its own resolution."""

    ir: Tensor  # (1, H, W)
    vis: Tensor  # (3, H, W)
    mask: Tensor  # (1, H, W)
    edge: Optional[Tensor]  # (1, H, W) from Edge/, else None (derived after resizing)
    name: str


class SodDataset(Dataset):
    """Thermal/visible pairs with saliency masks; items are resized to ``size`` (None: keep size).

    Targets are ``{"mask": (1, S, S), "edge": (1, S, S)}`` in [0, 1].
    """

    def __init__(self, root: Path, split: str, size: Optional[int], images: Optional[Path] = None) -> None:
        """``images``: read the visible side from this folder instead (fused images, for scoring)."""
        self.folders = split_folders(Path(root), split)
        self.size = size
        self.pairs = find_pairs(self.folders.ir, images or self.folders.vis)
        gts = index_images(self.folders.gt)
        missing = [p.name for p in self.pairs if p.name not in gts]
        if missing:
            raise UserError(f"{len(missing)} mask(s) missing in {self.folders.gt}: {_sample(missing)}; every "
                            "visible image needs a mask of the same name")
        self.masks = [gts[p.name] for p in self.pairs]
        self.edges: Optional[list[Path]] = None
        if self.folders.edge is not None:
            edges = index_images(self.folders.edge)
            found = [edges.get(p.name) or edges.get(p.name + "_edge") for p in self.pairs]
            absent = [p.name for p, e in zip(self.pairs, found) if e is None]
            if absent:
                raise UserError(f"{len(absent)} edge map(s) missing in {self.folders.edge}: {_sample(absent)}; "
                                "complete Edge/ or remove it (edges are then derived from the masks)")
            self.edges = found  # type: ignore[assignment]
        for pair, mask in zip(self.pairs, self.masks):  # header-only checks, so bad files fail up front
            vis_hw, ir_hw, mask_hw = image_size(pair.vis), image_size(pair.ir), image_size(mask)
            if ir_hw != vis_hw:
                raise UserError(f"size mismatch for {pair.name!r}: thermal {pair.ir} is {ir_hw[1]}x{ir_hw[0]}, "
                                f"visible {pair.vis} is {vis_hw[1]}x{vis_hw[0]}")
            if mask_hw != vis_hw:
                raise UserError(f"mask {mask} is {mask_hw[1]}x{mask_hw[0]}, but its image {pair.vis} is "
                                f"{vis_hw[1]}x{vis_hw[0]}; masks must match their images")

    def __len__(self) -> int:
        return len(self.pairs)

    def raw(self, index: int) -> RawSample:
        pair = self.pairs[index]
        vis = torch.from_numpy(read_image(pair.vis))
        vis = vis.expand(3, *vis.shape) if vis.ndim == 2 else vis.permute(2, 0, 1)
        ir = torch.from_numpy(read_infrared(pair.ir))[None]
        hw = tuple(vis.shape[1:])
        mask = read_mask(self.masks[index], hw)
        edge = read_mask(self.edges[index], hw, "edge map") if self.edges is not None else None
        return RawSample(ir, vis.contiguous(), mask, edge, pair.name)

    def __getitem__(self, index: int) -> Sample:
        return finish(self.raw(index), self.size)


def finish(raw: RawSample, size: Optional[int]) -> Sample:
    """Resize a (possibly augmented) raw sample and complete its targets."""
    ir, vis, mask, edge = raw.ir, raw.vis, raw.mask, raw.edge
    if size is not None:
        ir, vis, mask = resize(ir, size), resize(vis, size), resize(mask, size)
        edge = resize(edge, size) if edge is not None else None
    if edge is None:
        edge = mask_edges(mask)
    return Sample(ir=ir, vis=vis, target={"mask": mask, "edge": edge}, name=raw.name)


def collate(samples: list[Sample]) -> Batch:
    """Stack same-sized samples; targets become {"mask": (B, 1, S, S), "edge": (B, 1, S, S)}."""
    return Batch(ir=torch.stack([s.ir for s in samples]), vis=torch.stack([s.vis for s in samples]),
                 targets={k: torch.stack([s.target[k] for s in samples]) for k in ("mask", "edge")},
                 names=[s.name for s in samples])
