"""The base fusion loss of docs/method.md: intensity toward the brighter source, texture toward the sharper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTENSITY_WEIGHT = 0.2
GRADIENT_WEIGHT = 1.0
# What the texture term compares: "sobel_max", the paper's |Sobel| magnitudes against the larger of
# the two sources'; "selected", the signed pixel differences against those of the source whose
# gradient is locally stronger (the gradient-domain fusion objective: orientation and sign count).
GRADIENT_TARGETS = ("sobel_max", "selected")


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Sobel_x| + |Sobel_y| with the unnormalised 3x3 kernels and zero padding, (B, 1, H, W)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    grads = F.conv2d(x, kernel, padding=1)
    return grads.abs().sum(dim=1, keepdim=True)


def differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x, (B, C, H, W-1), and along y, (B, C, H-1, W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def selected_differences(ir: torch.Tensor, vis_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward differences of whichever source has the stronger gradient around each pixel.

    Strength is the gradient norm averaged over the 3x3 neighbourhood, so that the choice follows
    edges rather than single noisy pixels; ties go to the visible image.
    """
    (ir_dx, ir_dy), (vis_dx, vis_dy) = differences(ir), differences(vis_y)

    def strength(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2)  # (B, C, H-1, W-1)
        norm = F.pad(norm, (0, 1, 0, 1), mode="replicate")
        return F.avg_pool2d(norm, 3, stride=1, padding=1, count_include_pad=False)

    ir_wins = strength(ir_dx, ir_dy) > strength(vis_dx, vis_dy)
    return (torch.where(ir_wins[..., :, :-1], ir_dx, vis_dx), torch.where(ir_wins[..., :-1, :], ir_dy, vis_dy))


def fusion_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor,
                intensity_weight: float = INTENSITY_WEIGHT, gradient_weight: float = GRADIENT_WEIGHT,
                gradient_target: str = "sobel_max") -> torch.Tensor:
    """intensity_weight * L1(F, max(IR, Y)) + gradient_weight * texture, where texture is
    L1(S(F), max(S(IR), S(Y))) ("sobel_max", the paper's) or the L1 distance of F's forward
    differences to the selected source's, summed over x and y ("selected")."""
    intensity = F.l1_loss(fused, torch.maximum(ir, vis_y))
    if gradient_target == "selected":
        (dx, dy), (target_dx, target_dy) = differences(fused), selected_differences(ir, vis_y)
        texture = F.l1_loss(dx, target_dx) + F.l1_loss(dy, target_dy)
    elif gradient_target == "sobel_max":
        texture = F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y)))
    else:
        raise ValueError(f"gradient_target {gradient_target!r} is not one of {', '.join(GRADIENT_TARGETS)}")
    return intensity_weight * intensity + gradient_weight * texture
