"""Evaluating fused images on disk: pairing files, reading 8-bit gray, per-image jobs, summaries.

Kept free of torch and of the CLI so that worker processes start quickly.

Grey levels: infrared uses its first channel; visible and fused RGB images become luminance
Y = 0.299 R + 0.587 G + 0.114 B (BT.601); every image is quantised to 8 bits as floor(255 x + 0.5),
i.e. halves round up (for 8-bit RGB computed exactly in integers; 16-bit files in float64).
CDDFuse's cv2 conversion rounds halves to even and VIFB's rgb2gray uses 0.2989/0.5870/0.1140, so
their grey levels can differ by one from ours on a few pixels of colour images.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cldyn_cli.data.images import image_size, is_image, read_image, read_infrared, to_uint8
from cldyn_cli.data.pairs import find_pairs, index_images
from cldyn_cli.errors import UserError
from cldyn_cli.metrics import HIGHER_IS_BETTER, compute_all

GRAYSCALE_NOTE = ("IR: first channel; VIS and fused RGB: Y = 0.299R + 0.587G + 0.114B (BT.601); "
                  "8-bit as floor(255*x + 0.5), i.e. halves round up (exact integer arithmetic for 8-bit RGB)")
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Job:
    """One scene: its infrared and visible files and one fused file per compared method."""

    name: str
    ir: Path
    vis: Path
    fused: tuple[Path, ...]


def luminance8(img: np.ndarray) -> np.ndarray:
    """8-bit grey of a decoded [0, 1] image: BT.601 Y for RGB, the image itself for gray.

    RGB holding 8-bit codes (every value a multiple of 1/255) uses exact integer arithmetic,
    Y = floor((299 R + 587 G + 114 B + 500) / 1000), so halves round up without float noise;
    other RGB (16-bit files) uses floor(255 (0.299 R + 0.587 G + 0.114 B) + 0.5) in float64.
    """
    if img.ndim != 3:
        return to_uint8(img)
    codes = img.astype(np.float64) * 255.0
    rounded = np.rint(codes)
    if np.all(np.abs(codes - rounded) < 1e-3):
        weighted = rounded.astype(np.int64) @ np.array([299, 587, 114], dtype=np.int64)
        return ((weighted + 500) // 1000).astype(np.uint8)
    return to_uint8(img.astype(np.float64) @ _LUMA)


def method_names(paths: list[Path]) -> list[str]:
    """Display names for fused inputs: the folder (or file stem) name, the full path where names clash."""
    base = [p.name if p.is_dir() else p.stem for p in paths]
    return [p.as_posix() if base.count(b) > 1 else b for p, b in zip(paths, base)]


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def build_jobs(ir: Path, vis: Path, fused: list[Path]) -> list[Job]:
    """Pair IR/VIS by stem and find each method's fused image; check every size from the headers.

    Raises UserError for a missing fused file, an unreadable header or any size mismatch, before
    any metric is computed.
    """
    if not fused:
        raise UserError("no fused images given; pass FUSED (a folder or file) or --fused")
    pairs = find_pairs(ir, vis)
    for path in fused:
        if not path.exists():
            raise UserError(f"fused input {path} does not exist; check the path")
        if ir.is_file() != path.is_file():
            raise UserError(f"give fused images the same way as the sources ({'files' if ir.is_file() else 'folders'})"
                            f": {path} is {'a file' if path.is_file() else 'a folder'}")
        if path.is_file() and not is_image(path):
            raise UserError(f"{path} is not an image file we read (png, jpg, bmp, tif)")
    per_method: list[list[Path]] = []
    for path in fused:
        if path.is_file():
            per_method.append([path])
            continue
        index = index_images(path)
        missing = [p.name for p in pairs if p.name not in index]
        if missing:
            shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            raise UserError(f"{len(missing)} of {len(pairs)} fused image(s) missing in {path}: {shown}; "
                            "fused files must be named like the visible files")
        per_method.append([index[p.name] for p in pairs])
    jobs = []
    for i, pair in enumerate(pairs):
        hw, ir_hw = image_size(pair.vis), image_size(pair.ir)
        if ir_hw != hw:
            raise UserError(f"size mismatch for {pair.name!r}: infrared {_size_text(ir_hw)} vs visible "
                            f"{_size_text(hw)}; metrics need registered images of one size")
        if min(hw) < 2:
            raise UserError(f"{pair.vis} is {_size_text(hw)}; the metrics need at least 2x2 pixels")
        files = tuple(m[i] for m in per_method)
        for f in files:
            f_hw = image_size(f)
            if f_hw != hw:
                raise UserError(f"fused image {f} is {_size_text(f_hw)} but its sources {pair.name!r} are "
                                f"{_size_text(hw)}; evaluate fused images at the source size")
        jobs.append(Job(pair.name, pair.ir, pair.vis, files))
    return jobs


def _thumbnail(img: np.ndarray, size: int) -> bytes:
    pil = Image.fromarray(to_uint8(img))
    pil.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def evaluate_job(job: Job, convention: str, metrics: list[str], thumb_size: int | None = None) -> dict:
    """Metrics of every method on one scene: {"metrics": [{metric: value} per method], "thumbs": [...]}.

    With ``thumb_size``, "thumbs" holds JPEG thumbnails (IR, VIS, then each fused image).
    """
    ir_img, vis_img = read_infrared(job.ir), read_image(job.vis)
    a, b = to_uint8(ir_img), luminance8(vis_img)
    values, thumbs = [], []
    if thumb_size:
        thumbs = [_thumbnail(ir_img, thumb_size), _thumbnail(vis_img, thumb_size)]
    for path in job.fused:
        f_img = read_image(path)
        f = luminance8(f_img)
        if f.shape != a.shape:
            raise UserError(f"fused image {path} is {_size_text(f.shape)} but its sources are "
                            f"{_size_text(a.shape)}; evaluate fused images at the source size")
        if a.shape != b.shape:
            raise UserError(f"size mismatch for {job.name!r}: infrared {_size_text(a.shape)} vs visible "
                            f"{_size_text(b.shape)}")
        try:
            values.append(compute_all(a, b, f, convention, metrics))
        except ValueError as exc:
            raise UserError(f"cannot evaluate {path}: {exc}") from None
        if thumb_size:
            thumbs.append(_thumbnail(f_img, thumb_size))
    return {"metrics": values, "thumbs": thumbs}


@dataclass
class Summary:
    """Mean and standard deviation over images of one metric for one method."""

    mean: float
    std: float
    undefined: int  # images where the metric is NaN, left out of mean and std


def summarise(per_image: dict[str, dict[str, float]], metrics: list[str]) -> dict[str, Summary]:
    """NaN-skipping mean and population std (ddof 0) over images, per metric (VIFB also averages with nanmean)."""
    out = {}
    for m in metrics:
        vals = np.array([v[m] for v in per_image.values()], dtype=np.float64)
        ok = vals[~np.isnan(vals)]
        if ok.size:
            with np.errstate(invalid="ignore", over="ignore"):
                mean, std = float(ok.mean()), float(ok.std())
        else:
            mean = std = math.nan
        out[m] = Summary(mean, std, int(vals.size - ok.size))
    return out


def best_methods(summaries: list[dict[str, Summary]], metric: str) -> set[int]:
    """Indices of the methods with the best mean for a metric (ties all count; NaN never wins)."""
    means = [s[metric].mean for s in summaries]
    finite = [m for m in means if not math.isnan(m)]
    if not finite:
        return set()
    target = max(finite) if HIGHER_IS_BETTER[metric] else min(finite)
    return {i for i, m in enumerate(means) if m == target}


def json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None
