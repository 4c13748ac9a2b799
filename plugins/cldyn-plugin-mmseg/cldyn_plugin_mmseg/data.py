"""Segmentation datasets: registered IR/visible pairs with per-pixel class masks.

Layouts under ``root`` (``split`` is ``train``, ``test``, ...):

- FMB: ``{split}/Infrared``, ``{split}/Visible``, ``{split}/Label``;
- generic: ``{split}/ir``, ``{split}/vis``, ``{split}/masks``, or ``ir/``, ``vis/``, ``masks/`` directly
  under ``root`` (no splits: every split reads the whole folder), as ``cldyn synth --layout pairs``
  writes them.

Masks are one-channel PNGs of class indices ``0..num_classes-1``; ``255`` marks pixels without
ground truth (ignored by the loss and the metrics). Images and masks are resized to the network's
input size (bilinear for images, nearest for masks), so batches stack and fusion runs at that size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from cldyn_cli.plugin_api import Batch, Sample, UserError, find_pairs, is_image, read_image, read_infrared

IGNORE_INDEX = 255
LAYOUTS = (("Infrared", "Visible", "Label"), ("ir", "vis", "masks"))


def find_layout(root: Path, split: str) -> tuple[Path, Path, Path]:
    """The (infrared, visible, mask) folders of ``split`` in a supported layout."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; check the path")
    for base in (root / split, root):
        for names in LAYOUTS:
            folders = tuple(base / n for n in names)
            if all(f.is_dir() for f in folders):
                if base == root and names == LAYOUTS[0]:
                    continue  # FMB always has splits
                return folders  # type: ignore[return-value]
    raise UserError(f"no segmentation data for split {split!r} in {root}; expected {split}/Infrared, "
                    f"{split}/Visible and {split}/Label (FMB), or ir/, vis/ and masks/ (in {split}/ or directly)")


def read_mask(path: Path, num_classes: int) -> Tensor:
    """A class-index mask (H, W) as int64; anything else is a UserError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read mask {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}; "
                        "replace or remove the file") from None
    if arr.ndim == 3:
        if arr.shape[2] in (3, 4) and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            arr = arr[..., 0]  # gray saved as RGB
        else:
            raise UserError(f"mask {path} is a colour image ({mode}); masks must be one channel of class indices "
                            f"0..{num_classes - 1} (255 = ignore), e.g. mode L or P")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"mask {path} holds {arr.dtype} values, not class indices; save it as an 8-bit PNG")
    label = torch.from_numpy(arr.astype(np.int64))
    bad = (label >= num_classes) & (label != IGNORE_INDEX) | (label < 0)
    if bad.any():
        values = sorted({int(v) for v in label[bad].unique()[:5]})
        raise UserError(f"mask {path} has class values {values} outside 0..{num_classes - 1} (255 = ignore); "
                        "set num_classes (or classes) in the --task-config YAML")
    return label


def resize_image(img: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, H, W) float -> (C, *size), bilinear with antialiasing when shrinking."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) int64 -> size, nearest neighbour (class indices are never blended)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()


def _rgb(path: Path) -> Tensor:
    img = torch.from_numpy(read_image(path))
    return img.expand(3, *img.shape).contiguous() if img.ndim == 2 else img.permute(2, 0, 1).contiguous()


class SegmentationPairs(Dataset):
    """IR/visible pairs with masks (see the module docstring), resized to ``size`` (H, W)."""

    def __init__(self, root: Path, split: str, num_classes: int, size: tuple[int, int] | None,
                 images: Path | None = None) -> None:
        """``images``: read the visible side from this folder instead (fused images, for scoring)."""
        ir, vis, masks = find_layout(root, split)
        self.pairs = find_pairs(ir, images or vis)
        self.masks = masks
        self.num_classes = num_classes
        self.size = tuple(size) if size is not None else None
        self._mask_files = {p.with_suffix("").relative_to(masks).as_posix(): p
                            for p in sorted(masks.rglob("*")) if p.is_file() and is_image(p)}
        missing = [p.name for p in self.pairs if p.name not in self._mask_files]
        if missing:
            raise UserError(f"{len(missing)} pair(s) have no mask in {masks}, e.g. {missing[0]!r}; every visible "
                            "image needs a mask of the same name")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        ir = torch.from_numpy(read_infrared(pair.ir))[None]
        vis = _rgb(pair.vis)
        path = self._mask_files[pair.name]
        label = read_mask(path, self.num_classes)
        if not ir.shape[-2:] == vis.shape[-2:] == label.shape:
            raise UserError(f"mask {path}: infrared, visible and mask sizes differ ({tuple(ir.shape[-2:])}, "
                            f"{tuple(vis.shape[-2:])}, {tuple(label.shape)}); register them first")
        if self.size is not None:
            ir, vis, label = resize_image(ir, self.size), resize_image(vis, self.size), resize_mask(label, self.size)
        return Sample(ir=ir, vis=vis, target=label, name=pair.name)


class ImagesWithMasks(Dataset):
    """RGB images (fused, or visible for training) matched by name with masks, at full resolution.

    Items are ``(rgb (3, H, W), mask (H, W), name)``; used by ``cldyn mmseg train``.
    """

    def __init__(self, images: Path, masks: Path, num_classes: int) -> None:
        for folder, what in ((images, "image"), (masks, "mask")):
            if not folder.is_dir():
                raise UserError(f"{what} folder {folder} does not exist; check the path")
        found = {p.with_suffix("").relative_to(images).as_posix(): p
                 for p in sorted(images.rglob("*")) if p.is_file() and is_image(p)}
        mask_files = {p.with_suffix("").relative_to(masks).as_posix(): p
                      for p in sorted(masks.rglob("*")) if p.is_file() and is_image(p)}
        if not found:
            raise UserError(f"no images in {images}")
        missing = sorted(set(found) - set(mask_files))
        if missing:
            raise UserError(f"{len(missing)} image(s) in {images} have no mask in {masks}, e.g. {missing[0]!r}")
        self.items = [(found[k], mask_files[k], k) for k in sorted(found)]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str]:
        image, mask, name = self.items[index]
        rgb = _rgb(image)
        label = read_mask(mask, self.num_classes)
        if tuple(rgb.shape[-2:]) != tuple(label.shape):
            raise UserError(f"mask {mask} is {label.shape[1]}x{label.shape[0]} but image {image} is "
                            f"{rgb.shape[2]}x{rgb.shape[1]}")
        return rgb, label, name


def collate(samples: list[Sample]) -> Batch:
    """Stack same-sized samples; targets become a (B, H, W) int64 tensor of class indices."""
    sizes = {tuple(s.vis.shape[-2:]) for s in samples}
    if len(sizes) > 1:
        raise UserError(f"samples of different sizes {sorted(sizes)} in one batch; set size in the --task-config YAML")
    return Batch(ir=torch.stack([s.ir for s in samples]), vis=torch.stack([s.vis for s in samples]),
                 targets=torch.stack([s.target for s in samples]), names=[s.name for s in samples])
