"""The A2SI's two pooled image embeddings (kernel-type choice and basis query) for inference.

Both start with a bias-free 3x3 convolution of X, BatchNorm and LeakyReLU, and end in a global
average pool; the query adds a 64->128 convolution at full resolution, which is most of A2SI's
cost. In eval mode a BatchNorm is an affine map, so it folds into the convolution before it; the
two first convolutions read the same X, so they run as one (8 -> 8 + 64 channels); channels-last
runs these narrow convolutions much faster on CPU; activations are in place. Same output as the
modules to float rounding.

A query stride s > 1 computes the query on X area-downsampled by s, which changes the output
(the query then only sees a coarser X) and cuts the query's cost by about s^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .vfn import SLOPE


def downsampled(x: torch.Tensor, stride: int) -> torch.Tensor:
    """X averaged over stride x stride cells (the last, partial cells over what they cover)."""
    return x if stride == 1 else F.avg_pool2d(x, stride, ceil_mode=True)


def folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(conv(.))`` in eval mode as one convolution."""
    return fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                norm.weight, norm.bias)


def _conv_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu_(F.conv2d(x, weight, bias, padding=1), SLOPE)


@torch.no_grad()
def inference_embeddings(choice: nn.Sequential, query: nn.Sequential, x: torch.Tensor,
                         query_stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(choice(x), query(downsampled x))``, flattened, for eval-mode ``choice`` = (Conv, BN, LReLU,
    pool) and ``query`` = (Conv, BN, LReLU, Conv, BN, LReLU, pool)."""
    x = x.contiguous(memory_format=torch.channels_last)
    choice_w, choice_b = folded(choice[0], choice[1])
    query_w, query_b = folded(query[0], query[1])
    if query_stride == 1:
        split = query_w.shape[0]  # query channels first: its slice then starts at the pixel's first value
        both = _conv_act(x, torch.cat([query_w, choice_w]), torch.cat([query_b, choice_b]))
        hidden, choice_map = both[:, :split], both[:, split:]
    else:
        hidden = _conv_act(downsampled(x, query_stride), query_w, query_b)
        choice_map = _conv_act(x, choice_w, choice_b)
    query_map = _conv_act(hidden, *folded(query[3], query[4]))
    return choice_map.mean((2, 3)), query_map.mean((2, 3))
