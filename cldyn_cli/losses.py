"""The base fusion loss of docs/method.md: intensity toward the brighter source, texture toward the sharper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTENSITY_WEIGHT = 0.2
GRADIENT_WEIGHT = 1.0


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Sobel_x| + |Sobel_y| with the unnormalised 3x3 kernels and zero padding, (B, 1, H, W)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    grads = F.conv2d(x, kernel, padding=1)
    return grads.abs().sum(dim=1, keepdim=True)


def fusion_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor,
                intensity_weight: float = INTENSITY_WEIGHT, gradient_weight: float = GRADIENT_WEIGHT) -> torch.Tensor:
    """0.2 * L1(F, max(IR, Y)) + 1.0 * L1(S(F), max(S(IR), S(Y)))."""
    intensity = F.l1_loss(fused, torch.maximum(ir, vis_y))
    texture = F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y)))
    return intensity_weight * intensity + gradient_weight * texture
