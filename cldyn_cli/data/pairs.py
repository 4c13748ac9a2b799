"""Matching infrared and visible files into pairs, by file stem.

Datasets in this field keep IR and visible images in two parallel folders with the same file
names (extensions may differ in case or kind), sometimes split into sub-folders such as
``train/`` and ``test/``; a pair is matched by its path relative to its folder, minus the suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cldyn_cli.data.images import image_size, is_image
from cldyn_cli.errors import UserError


@dataclass(frozen=True)
class Pair:
    """One scene: its infrared file, its visible file, and the name its outputs take."""

    ir: Path
    vis: Path
    name: str  # relative stem, e.g. "train/00012"


def index_images(folder: Path) -> dict[str, Path]:
    """Images below ``folder`` keyed by relative path without suffix; two files per key is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_image(path) and not path.name.startswith("."):
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in found:
                raise UserError(f"two images share the name {key!r} in {folder}: {found[key].name} and "
                                f"{path.name}; keep one")
            found[key] = path
    return found


def _sample(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def find_pairs(ir: Path, vis: Path) -> list[Pair]:
    """Pairs from two folders (matched by relative stem) or from two single files."""
    for path, what in ((ir, "infrared"), (vis, "visible")):
        if not path.exists():
            raise UserError(f"{what} input {path} does not exist; check the path")
    if ir.is_file() != vis.is_file():
        raise UserError(f"give two folders or two files, not one of each ({ir}, {vis})")
    if ir.is_file():
        for path in (ir, vis):
            if not is_image(path):
                raise UserError(f"{path} is not an image file we read (png, jpg, bmp, tif)")
        return [Pair(ir, vis, vis.stem)]
    ir_files, vis_files = index_images(ir), index_images(vis)
    if not ir_files:
        raise UserError(f"no images in {ir}; point at the folder holding the infrared images")
    if not vis_files:
        raise UserError(f"no images in {vis}; point at the folder holding the visible images")
    only_ir = sorted(set(ir_files) - set(vis_files))
    only_vis = sorted(set(vis_files) - set(ir_files))
    if only_ir or only_vis:
        parts = []
        if only_ir:
            parts.append(f"{len(only_ir)} infrared without visible: {_sample(only_ir)}")
        if only_vis:
            parts.append(f"{len(only_vis)} visible without infrared: {_sample(only_vis)}")
        raise UserError("unmatched file names (" + "; ".join(parts) + "); names must match by stem")
    return [Pair(ir_files[k], vis_files[k], k) for k in sorted(ir_files)]


def check_sizes(pairs: list[Pair]) -> list[tuple[int, int]]:
    """Visible sizes (H, W) per pair; a pair whose two images differ in size is an error."""
    sizes = []
    for pair in pairs:
        ir_hw, vis_hw = image_size(pair.ir), image_size(pair.vis)
        if ir_hw != vis_hw:
            raise UserError(f"size mismatch for {pair.name!r}: infrared {ir_hw[1]}x{ir_hw[0]} vs visible "
                            f"{vis_hw[1]}x{vis_hw[0]}; register the images or pass --resize")
        sizes.append(vis_hw)
    return sizes


_VIS_NAMES = ("vis", "vi", "visible", "Visible", "RGB", "rgb")
_IR_NAMES = ("ir", "IR", "infrared", "Infrared", "T", "T_GRAY", "thermal")


def _split_folders(root: Path) -> list[tuple[Path, Path]]:
    """(ir, vis) folder pairs found directly in root or one level down (train/test splits)."""
    found = []
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        ir = next((base / n for n in _IR_NAMES if (base / n).is_dir()), None)
        vis = next((base / n for n in _VIS_NAMES if (base / n).is_dir()), None)
        if ir is not None and vis is not None:
            found.append((ir, vis))
        if base == root and found:
            break
    return found


def find_dataset_pairs(root: Path) -> list[Pair]:
    """All pairs of a dataset root in any supported layout.

    Layouts: ``ir/`` + ``vis/`` (or ``vi/``), optionally with split sub-folders (M3FD);
    ``{split}/Infrared`` + ``{split}/Visible`` (FMB); ``{Split}/T`` or ``T_GRAY`` + ``{Split}/RGB`` (VT5000).
    """
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; check the path")
    folders = _split_folders(root)
    if not folders:
        raise UserError(f"no infrared/visible folders in {root}; expected ir/ and vis/ (or vi/), "
                        "split/Infrared and split/Visible, or Split/T and Split/RGB")
    pairs: list[Pair] = []
    for ir, vis in folders:
        prefix = "" if ir.parent == root else ir.parent.name + "/"
        pairs += [Pair(p.ir, p.vis, prefix + p.name) for p in find_pairs(ir, vis)]
    return pairs
