"""CTDNet's training loss and the edge maps it supervises the boundary path with.

As in the authors' trainer: every saliency output gets IoU + 0.6 * BCE against the mask, the edge
output gets BCE against the edge map, and the deep-supervision maps count 1/2, 1/4, 1/8, 1/16:

    L = S(sal) + BCE(edge) + S(aux2)/2 + S(aux3)/4 + S(aux4)/8 + S(aux5)/16,
    S(p) = IoU(p) + 0.6 * BCE(p),  IoU(p) = 1 - (sum p*m + 1) / (sum p + m - p*m + 1) per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cldyn_plugin_ctdnet.network import CTDNetOutput

AUX_WEIGHTS = (1 / 2, 1 / 4, 1 / 8, 1 / 16)
BCE_WEIGHT = 0.6
EDGE_KERNEL = 3  # morphological gradient kernel: a boundary about two pixels wide


def structure_loss(logits: Tensor, mask: Tensor) -> Tensor:
    """IoU + 0.6 * BCE of saliency logits (B, 1, H, W) against a mask in [0, 1] (soft masks allowed)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    pred = torch.sigmoid(logits)
    inter = (pred * mask).sum(dim=(2, 3))
    union = (pred + mask).sum(dim=(2, 3))
    iou = 1 - (inter + 1) / (union - inter + 1)
    return iou.mean() + BCE_WEIGHT * bce


def ctdnet_loss(out: CTDNetOutput, mask: Tensor, edge: Tensor) -> Tensor:
    """The full CTDNet loss; ``out`` must carry the auxiliary maps (``with_aux=True``).

    Outputs at another resolution than the mask are resized to it (bilinear) first.
    """
    if len(out.aux) != len(AUX_WEIGHTS):
        raise ValueError("ctdnet_loss needs the auxiliary outputs: run the network with with_aux=True")
    size = mask.shape[2:]

    def fit(x: Tensor) -> Tensor:
        return x if x.shape[2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    loss = structure_loss(fit(out.saliency), mask)
    loss = loss + F.binary_cross_entropy_with_logits(fit(out.edge), edge)
    for weight, aux in zip(AUX_WEIGHTS, out.aux):
        loss = loss + weight * structure_loss(fit(aux), mask)
    return loss


def mask_edges(mask: Tensor, kernel: int = EDGE_KERNEL, threshold: float = 0.5) -> Tensor:
    """Edge map of a mask (..., H, W) in [0, 1]: morphological gradient (dilation minus erosion with a
    ``kernel`` x ``kernel`` square) of the binarised mask; 1 on the object's boundary, else 0."""
    shape = mask.shape
    binary = (mask > threshold).float().reshape(-1, 1, *shape[-2:])
    pad = kernel // 2
    dilated = F.max_pool2d(F.pad(binary, (pad,) * 4, mode="replicate"), kernel, stride=1)
    eroded = -F.max_pool2d(F.pad(-binary, (pad,) * 4, mode="replicate"), kernel, stride=1)
    return (dilated - eroded).reshape(shape)
