"""The reward-penalty task loss: improving on the base fused image is rewarded, doing worse
than it is penalised delta times more."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reward_penalty(l_comp: torch.Tensor, l_base: torch.Tensor | float, delta: float = 5.0) -> torch.Tensor:
    """L_comp + delta * ReLU(L_comp - L_base); L_base is a constant (no gradient)."""
    l_base = torch.as_tensor(l_base, dtype=l_comp.dtype, device=l_comp.device).detach()
    return l_comp + delta * F.relu(l_comp - l_base)
