"""Reading and writing images as float arrays in [0, 1].

Thermal cameras write 16-bit files, so bit depth is honoured: 8-bit scales by 255, 16-bit by 65535.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cldyn_cli.errors import UserError
from cldyn_cli.outputs import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

DEFAULT_MAX_PIXELS = 64_000_000  # 8000x8000: about 3 GB while fusing (tiled); --max-pixels raises it
Image.MAX_IMAGE_PIXELS = None  # our own limit below replaces PIL's, so that the error names the flag
_max_pixels = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int) -> None:
    """Set the largest image (width x height) that is read or written (the --max-pixels option)."""
    global _max_pixels
    if limit < 1:
        raise UserError(f"--max-pixels must be at least 1, got {limit}")
    _max_pixels = limit


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse an image above the pixel limit before anything is decoded or allocated."""
    if width * height > _max_pixels:
        raise UserError(f"{what} is {width}x{height} ({width * height:,} pixels), above the limit of "
                        f"{_max_pixels:,}; pass --max-pixels {width * height} if you have the memory")


def is_image(path: Path) -> bool:
    """True when the file name has an image extension we read (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header only, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path}: {_reason(exc)}; replace or remove the file") from None
    check_pixels(width, height, f"image {path}")
    return height, width


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_float(arr: np.ndarray, mode: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16 or mode.startswith("I;16"):
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):  # mode "I" (32-bit) files holding 16-bit data
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def read_image(path: Path) -> np.ndarray:
    """Decode an image to float32 in [0, 1], shaped (H, W) for gray or (H, W, 3) for colour."""
    try:
        with Image.open(path) as im:
            check_pixels(*im.size, f"image {path}")
            im.load()
            mode = im.mode
            if mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                im = im.convert("L" if mode in ("LA", "1") else "RGB")
                mode = im.mode
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError) as exc:
        raise UserError(f"cannot read image {path}: {_reason(exc)}; replace or remove the file") from None
    out = _to_float(arr, mode)
    if out.ndim == 3 and out.shape[2] == 4:
        out = out[..., :3]
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[..., 0]
    return out


def read_infrared(path: Path) -> np.ndarray:
    """Infrared as one channel (H, W); an RGB file contributes its first channel."""
    img = read_image(path)
    return img[..., 0] if img.ndim == 3 else img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a [0, 1] float image to 8-bit (8-bit arrays, e.g. class masks, pass unchanged)."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(img: np.ndarray, path: Path, compress_level: int = 6) -> None:
    """Write an 8-bit PNG atomically: a reader never sees a half-written file."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(img)).save(tmp, format="PNG", compress_level=compress_level)
