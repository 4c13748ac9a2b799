"""The fusion pipeline: colour split, base fusion (tiled for large images), colour recombination.

Tiling is exact, not approximate: every tile is computed with a margin as wide as the network's
receptive radius, and the one global quantity (FRB1's channel attention, which pools over the
whole image) is computed from the whole image in a first pass and then shared by all tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.models.inference import InferenceVFN, channel_max, inference_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig, apply_stretch, stretch_bounds
from cldyn_cli.runtime import reuse_freed_memory

if TYPE_CHECKING:
    from cldyn_cli.models.rsc import SemanticCompensation
    from cldyn_cli.tasks import TaskBackend

AUTO_TILE_PIXELS = 2048 * 2048  # above this many pixels, fuse tile by tile
# Smaller tiles use less memory and cache better but recompute more margin (the receptive radius on
# every side). Measured on a 4000x3000 pair: 384 as fast as 512 and 1.39 GB peak instead of 1.53.
DEFAULT_TILE = 384
BAND_ROWS = 256  # colour conversion of whole images runs in bands of this many rows
MIN_SIDE = 8  # reflect padding needs a few pixels; smaller images are padded and cropped back


@dataclass(frozen=True)
class Window:
    """A tile's core (what it writes) inside the window it computes (core plus margin)."""

    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int

    def core_in_window(self) -> tuple[slice, slice]:
        return slice(self.y0 - self.wy0, self.y1 - self.wy0), slice(self.x0 - self.wx0, self.x1 - self.wx0)


def windows(height: int, width: int, tile: int, margin: int) -> Iterator[Window]:
    """Tiles covering the image; each window is the core grown by ``margin`` and clipped to the image."""
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            yield Window(y0, y1, x0, x1, max(0, y0 - margin), min(height, y1 + margin),
                         max(0, x0 - margin), min(width, x1 + margin))


def _pad_small(x: torch.Tensor) -> torch.Tensor:
    ph, pw = max(0, MIN_SIDE - x.shape[-2]), max(0, MIN_SIDE - x.shape[-1])
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class Fuser:
    """Fuses luminance with a base VFN, tiling large images so that memory stays bounded."""

    def __init__(self, model: VFN, device: torch.device, tile: Optional[int] = None,
                 auto_tile_pixels: int = AUTO_TILE_PIXELS) -> None:
        if device.type == "cpu":
            reuse_freed_memory()
        # Channels-last runs the narrow (8-32 channel) convolutions 2-4x faster on CPU.
        self.model = inference_vfn(model).to(device, memory_format=torch.channels_last)
        self.device = device
        self.tile = tile
        self.auto_tile_pixels = auto_tile_pixels

    def _put(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=torch.channels_last)

    def _tile_for(self, height: int, width: int) -> Optional[int]:
        if self.tile:
            return self.tile if max(height, width) > self.tile else None
        return DEFAULT_TILE if height * width > self.auto_tile_pixels else None

    @torch.no_grad()
    def fuse_y(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fused Y (B, 1, H, W) from IR and visible Y (B, 1, H, W) on any device; result on CPU."""
        height, width = ir.shape[-2:]
        ir_p, vis_p = _pad_small(ir), _pad_small(vis_y)
        tile = self._tile_for(height, width)
        if tile is None:
            out = self.model(self._put(ir_p), self._put(vis_p))
        else:
            out = self._tiled(ir_p, vis_p, tile)
        # Stretched here, over the whole image, so that tiles and padding cannot change it.
        return stretch_output(out[..., :height, :width].float().cpu(), self.model.config)

    def _tiled(self, ir: torch.Tensor, vis_y: torch.Tensor, tile: int) -> torch.Tensor:
        model = self.model
        height, width = ir.shape[-2:]
        prior = model.prior(self._put(ir), self._put(vis_y))  # global (a Poisson solve): from the whole image
        # Pass 1: whole-image gradient statistics of the encoder features -> channel attention.
        enc_margin = 3 + 4 * model.config.blocks  # stem 2 + CBs 4L + the gradient's 1
        total, peak, count = 0.0, None, 0
        for w in windows(height, width, tile, enc_margin):
            f_ir, f_vis = model.encode(self._put(ir[..., w.wy0:w.wy1, w.wx0:w.wx1]),
                                       self._put(vis_y[..., w.wy0:w.wy1, w.wx0:w.wx1]))
            g = model.fusion.gradients(f_ir, f_vis)[(..., *w.core_in_window())]
            total = total + g.sum(dim=(2, 3))
            tile_max = channel_max(g)
            peak = tile_max if peak is None else torch.maximum(peak, tile_max)
            count += g.shape[-1] * g.shape[-2]
        attention = model.fusion.channel_attention(total / count, peak)
        # Pass 2: every tile with the shared attention, cropped to its core.
        out = torch.empty(ir.shape[0], 1, height, width)
        margin = model.receptive_radius()
        for w in windows(height, width, tile, margin):
            window = (..., slice(w.wy0, w.wy1), slice(w.wx0, w.wx1))
            fused = model(self._put(ir[window]), self._put(vis_y[window]), channel_attention=attention,
                          prior=None if prior is None else prior[window])
            out[..., w.y0:w.y1, w.x0:w.x1] = fused[(..., *w.core_in_window())].float().cpu()
        return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) float array in [0, 1] -> (1, C, H, W) tensor.

    Integer images are refused rather than read as 0..255 floats (convert with
    ``cldyn_cli.api.as_float_image``, or read files with ``read_image``).
    """
    if img.dtype.kind != "f":
        raise TypeError(f"expected a float image in [0, 1], got dtype {img.dtype}; scale integer images first "
                        "(cldyn_cli.api.as_float_image)")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def to_array(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W) or (H, W, 3) float array."""
    t = t[0].detach().cpu()
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image, for the ``--resize`` option of unregistered pairs."""
    if img.shape[:2] == (height, width):
        return img
    t = F.interpolate(to_tensor(img), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return to_array(t)


def row_bands(height: int, rows: int = BAND_ROWS) -> Iterator[slice]:
    """Consecutive bands of ``rows`` image rows covering ``height``."""
    return (slice(y, min(y + rows, height)) for y in range(0, height, rows))


def stretch_output(out: torch.Tensor, config: VFNConfig) -> torch.Tensor:
    """``out`` with the model's output stretch (if its config has one), in place band by band, so
    that no full-size temporary is made; the quantiles are found by selection, not by sorting."""
    if config.stretch:
        lo, span = stretch_bounds(out, config.stretch_clip, select=True)
        for rows in row_bands(out.shape[-2]):
            out[..., rows, :] = apply_stretch(out[..., rows, :], lo, span)
    return out


def fuse_images(fuser: Fuser, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Fuse one IR (H, W) with one visible image (H, W) or (H, W, 3); same size and colour as visible.

    The colour conversions are per pixel, so they run band by band of rows: no full-size
    three-channel temporary exists besides the visible input and the result (for a 4000x3000 pair
    each such temporary is 144 MB).
    """
    vis_t = to_tensor(vis)
    height = vis.shape[0]
    vis_y = torch.empty(1, 1, *vis.shape[:2])
    for rows in row_bands(height):
        vis_y[..., rows, :] = luminance(vis_t[..., rows, :])
    fused_y = fuser.fuse_y(to_tensor(ir), vis_y)
    del vis_y
    out = np.empty(vis.shape, np.float32)  # after fusing, so that it can reuse the tiles' freed memory
    for rows in row_bands(height):
        out[rows] = to_array(recombine(fused_y[..., rows, :], vis_t[..., rows, :]))
    return out


def task_rgb(fused_y: torch.Tensor, vis: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """The fused image as a task network sees it: RGB in [0, 1] (gray repeated to 3 channels);
    ``clamp`` False keeps values outside [0, 1], as the authors' training does."""
    rgb = recombine(fused_y, vis, clamp)
    return rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb


@torch.no_grad()
def compensated_inference_y(base: InferenceVFN, compensation: "SemanticCompensation", task: "TaskBackend",
                            ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`compensated_y` for inference, with the same output (to float rounding), faster: both
    passes run the inference form of the base network and share its stem and first block (their
    output is the same in both: the first compensation follows block 0)."""
    vis_y = luminance(vis)
    ir, vis_y = ir.contiguous(memory_format=torch.channels_last), vis_y.contiguous(memory_format=torch.channels_last)
    first, prior = base.first_features(ir, vis_y), base.prior(ir, vis_y)
    base_y = stretch_output(base.from_first(first, ir, vis_y, prior=prior), base.config)
    features = task.features(task_rgb(base_y, vis))
    fused = base.from_first(first, ir, vis_y, hook=compensation.hook(features), prior=prior)
    return base_y, stretch_output(fused, base.config)


def compensated_y(base: VFN, compensation: "SemanticCompensation", task: "TaskBackend", ir: torch.Tensor,
                  vis: torch.Tensor, clamp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(base fused Y, compensated fused Y): the closed loop of docs/method.md for one batch.

    The task network looks at the base fused image; its features condition the compensation that
    is injected into both encoder branches. Gradients flow only through the compensated pass.
    ``clamp`` False shows the task network unclamped RGB (see :func:`task_rgb`).
    """
    vis_y = luminance(vis)
    with torch.no_grad():
        prior = base.prior(ir, vis_y)
        base_y = base(ir, vis_y, prior=prior)
        features = task.features(task_rgb(base_y, vis, clamp))
    return base_y, base(ir, vis_y, hook=compensation.hook(features), prior=prior)
