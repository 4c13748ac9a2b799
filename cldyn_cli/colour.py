"""BT.601 full-range YCbCr, exactly as docs/method.md gives it: only Y is fused, chroma comes from visible."""

from __future__ import annotations

import torch

_OFFSET = torch.tensor([0.0, 128.0 / 255.0, 128.0 / 255.0], dtype=torch.float64)
_FORWARD = torch.tensor([[0.299, 0.587, 0.114],
                         [-0.1687, -0.3313, 0.5],
                         [0.5, -0.4187, -0.0813]], dtype=torch.float64)
# The exact inverse of the forward matrix, so that RGB -> YCbCr -> RGB is the identity.
_INVERSE = torch.linalg.inv(_FORWARD)


def _apply(matrix: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(img), img)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) Y, Cb, Cr (chroma centred on 128/255)."""
    return _apply(_FORWARD, rgb) + _OFFSET.to(rgb).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`, clamped to [0, 1] (unless ``clamp`` is False)."""
    rgb = _apply(_INVERSE, ycc - _OFFSET.to(ycc).view(1, 3, 1, 1))
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def recombine(fused_y: torch.Tensor, vis: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Put fused luminance back with the visible image's chroma, clamped to [0, 1] unless ``clamp`` is
    False (the authors' closed loop trains on the unclamped image).

    ``vis`` is (B, 1, H, W) for grayscale (the result stays grayscale) or (B, 3, H, W) RGB.
    """
    if vis.shape[1] == 1:
        return fused_y.clamp(0.0, 1.0) if clamp else fused_y
    ycc = rgb_to_ycbcr(vis)
    return ycbcr_to_rgb(torch.cat([fused_y, ycc[:, 1:]], dim=1), clamp)


def luminance(vis: torch.Tensor) -> torch.Tensor:
    """Y channel (B, 1, H, W) of a visible batch, gray or RGB."""
    return vis if vis.shape[1] == 1 else rgb_to_ycbcr(vis)[:, :1]
