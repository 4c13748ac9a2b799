"""The Python API: fuse images from notebooks and other programs (what `cldyn fuse` does per pair).

>>> from cldyn_cli import Fuser
>>> fuser = Fuser()                                    # the shipped base model, device "auto"
>>> fused = fuser(ir, vis)                             # NumPy arrays or PIL images
>>> det = Fuser(rsc="rsc.safetensors", task="det", task_weights="best.pt")   # compensated for a task

Inputs are NumPy arrays (uint8, uint16, or float in [0, 1]) or PIL images; the result has the
visible input's kind (dtype and range, or PIL mode) and size. Integer arrays are scaled by their
bit depth, never read as if they were floats.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image

from cldyn_cli.checkpoint import metadata_json
from cldyn_cli.colour import recombine
from cldyn_cli.errors import UserError
from cldyn_cli import fusion
from cldyn_cli.fusion import compensated_inference_y, fuse_images, to_array, to_tensor
from cldyn_cli.models.loading import load_compensation, load_vfn
from cldyn_cli.models.rsc import A2SI, SemanticCompensation
from cldyn_cli.models.inference import inference_vfn
from cldyn_cli.models.vfn import VFN, with_stretch
from cldyn_cli.tasks import TaskBackend, TaskOptions, TaskSpec

ImageLike = Union[np.ndarray, Image.Image]
PathLike = Union[str, Path]
_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def as_float_image(img: ImageLike, what: str) -> np.ndarray:
    """(H, W) or (H, W, 3) float32 in [0, 1] from an array or a PIL image; anything else is refused."""
    if isinstance(img, Image.Image):
        if img.mode not in ("L", "RGB", "I;16", "F"):
            img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
        img = np.asarray(img)
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array or a PIL image, not {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{what} must be (H, W) or (H, W, 3); got shape {img.shape}")
    if img.dtype in _SCALES:
        return img.astype(np.float32) / _SCALES[img.dtype]
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"{what} has dtype {img.dtype}; give uint8, uint16 or float in [0, 1]")
    if img.size and (float(np.nanmin(img)) < 0.0 or float(np.nanmax(img)) > 1.0):
        raise ValueError(f"{what} is float but not in [0, 1] (range {np.nanmin(img):g}..{np.nanmax(img):g}); "
                         "scale it, or pass the integer image")
    return img.astype(np.float32)


def like(fused: np.ndarray, template: ImageLike) -> ImageLike:
    """The fused float image in the template's kind: its dtype and range, or its PIL mode."""
    kind = np.asarray(template).dtype if isinstance(template, Image.Image) else template.dtype
    if kind in _SCALES:
        out: Any = np.round(np.clip(fused, 0.0, 1.0) * _SCALES[kind]).astype(kind)
    else:
        out = fused.astype(kind)
    return Image.fromarray(out) if isinstance(template, Image.Image) else out


class Fuser:
    """Fuses infrared/visible pairs with the base network, or compensated for a downstream task.

    ``Fuser(base=None | path)`` fuses with a base model (default: the shipped one).
    ``Fuser(rsc=path, task="det", task_weights=path)`` fuses with a trained compensation (which
    carries its base network) for the task it was trained for. ``device`` is "auto", "cpu",
    "cuda" or "cuda:N"; ``tile`` fuses large images tile by tile (exact); ``stretch`` switches the
    base model's output stretch on or off (None: as it was trained). ``trust_checkpoint`` lets the
    task's plugin unpickle its weights in full (which runs code stored in them): only for files you trust.
    """

    def __init__(self, base: Optional[PathLike] = None, *, rsc: Optional[PathLike] = None,
                 task: Optional[str] = None, task_weights: Optional[PathLike] = None,
                 task_config: Optional[PathLike] = None, feature_layer: Optional[str] = None,
                 device: str = "auto", tile: Optional[int] = None, sample: bool = False, seed: int = 0,
                 stretch: Optional[bool] = None, trust_checkpoint: bool = False) -> None:
        from cldyn_cli.ui import resolve_device

        if (task is None) != (rsc is None):
            raise UserError("task and rsc go together: a compensation is conditioned on its task network")
        if rsc is not None and base is not None:
            raise UserError("base cannot be combined with rsc: the compensation file carries its base network")
        self.device = resolve_device(device)
        if rsc is None:
            self._base = fusion.Fuser(with_stretch(load_vfn(_path(base))[0], stretch), self.device, tile)
            self._compensated = None
        else:
            options = TaskOptions(_path(task_weights), _path(task_config), self.device, feature_layer,
                                  trust=trust_checkpoint)
            self._compensated = _CompensatedFusion(str(task), Path(rsc), options, sample, seed, stretch)

    def fuse_float(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """IR (H, W) and visible (H, W) or (H, W, 3), float32 in [0, 1] -> fused, shaped like visible."""
        if ir.dtype.kind != "f" or vis.dtype.kind != "f":
            raise TypeError("fuse_float takes float images in [0, 1]; call the Fuser itself for other kinds")
        if ir.shape[:2] != vis.shape[:2]:
            raise ValueError(f"infrared {ir.shape[:2]} and visible {vis.shape[:2]} differ in size; "
                             "resize the infrared image to the visible one first")
        if self._compensated is not None:
            return self._compensated(ir, vis)
        return fuse_images(self._base, ir, vis)

    def __call__(self, ir: ImageLike, vis: ImageLike) -> ImageLike:
        """The fused image, of the visible input's kind and size (an RGB infrared uses its first channel)."""
        ir_f, vis_f = as_float_image(ir, "ir"), as_float_image(vis, "vis")
        return like(self.fuse_float(ir_f[..., 0] if ir_f.ndim == 3 else ir_f, vis_f), vis)


def _path(value: Optional[PathLike]) -> Optional[Path]:
    return None if value is None else Path(value)


class _CompensatedFusion:
    """Fusion compensated for one task: the loaded compensation, its base and the task network."""

    def __init__(self, task: str, rsc: Path, options: TaskOptions, sample: bool, seed: int,
                 stretch: Optional[bool]) -> None:
        from cldyn_cli.plugins import get_task

        require_weights(options, get_task(task).name)  # an unknown task is reported first
        self.compensation, base, self.backend = load_task_compensation(task, rsc, options)
        # The inference form, channels-last, as base fusion runs (same output, about twice as fast on CPU).
        self.base = inference_vfn(with_stretch(base, stretch)).to(memory_format=torch.channels_last)
        self.device = options.device
        for block in self.compensation.modules():
            if isinstance(block, A2SI):
                block.sample = sample
        torch.manual_seed(seed)

    @torch.no_grad()
    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        vis_t = to_tensor(vis).to(self.device)
        _, fused_y = compensated_inference_y(self.base, self.compensation, self.backend,
                                             to_tensor(ir).to(self.device), vis_t)
        return to_array(recombine(fused_y.float(), vis_t).cpu())


def load_task_compensation(task: str, rsc: Path, options: TaskOptions
                           ) -> tuple[SemanticCompensation, VFN, TaskBackend]:
    """The compensation in ``rsc``, its base network, and the task network tapped where it was trained.

    A compensation trained for other tasks is refused: its kernels answer another network's features.
    """
    from cldyn_cli.plugins import get_task

    spec = get_task(task)
    compensation, base, metadata = load_compensation(rsc, options.device)
    trained_for = {t.get("task"): t for t in metadata_json(metadata, "tasks", rsc)}
    if spec.name not in trained_for:
        raise UserError(f"{rsc} was trained for {', '.join(map(str, trained_for))}, not {spec.name}; "
                        f"use it for that task, or train a compensation for {spec.name} with `cldyn compensate`")
    return compensation, base, _load_backend(spec, options, trained_for[spec.name].get("feature_layer"), rsc)


def require_weights(options: TaskOptions, task: str) -> None:
    """Refuse an untrained task network: its features and loss would be noise."""
    if options.weights is None:
        raise UserError(f"task {task!r} needs --task-weights (the trained task network, e.g. from the plugin's "
                        "train command); without them it would be a random, untrained network")


def _load_backend(spec: TaskSpec, options: TaskOptions, trained_layer: Optional[str], rsc: Path) -> TaskBackend:
    """The task network, tapped where the compensation was trained unless told otherwise.

    A different architecture (cross-detector use) may lack that layer: then the task's default.
    """
    if options.feature_layer is not None or trained_layer is None:
        return spec.load(options)
    try:
        return spec.load(replace(options, feature_layer=trained_layer))
    except UserError:
        print(f"warning: this task network has no layer {trained_layer!r}, which {rsc} was trained with; "
              "using the task's default layer", file=sys.stderr)
        return spec.load(options)
