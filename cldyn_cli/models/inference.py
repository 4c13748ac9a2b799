"""A faster inference form of a trained VFN: same weights, same output (to float rounding), less work.

The trained :class:`~cldyn_cli.models.vfn.VFN` stays as it is (training, checkpoints, hooks and
export use it); :func:`inference_vfn` derives from it a module restructured for inference, each
change measured with ``benchmarks/profile_fuse.py`` on a 640x480 pair (benchmarks/README.md):

- BatchNorm is folded into the convolutions (:func:`fold_batchnorm`);
- the gradient magnitude of the features is shifted differences on the channels-last maps, not a
  1-channel convolution per channel after a layout copy (near 1 GFLOP/s: 40% of the time);
- FRB1's two spatial-attention branches end in one 64->16 convolution over both hidden maps (a
  sum of two convolutions is one convolution over the concatenated inputs);
- maps about to be convolved with reflect padding are written into padded buffers, activations
  and the output mapping run in place: fewer full-size copies and allocations;
- the channel maximum halves the map with ``torch.maximum`` and the 1x1 squeezes call oneDNN
  directly: both replace kernels that ran far below their peers on channels-last maps.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cldyn_cli.models.fast_ops import pointwise_conv
from cldyn_cli.models.vfn import (SLOPE, VFN, BlockHook, ConvBlock, GradientAttentionFusion, avg_pool3, fold_batchnorm,
                                  max_pool3, padded_gradient_magnitude)


def padded_buffer(like: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An uninitialised map of ``like``'s batch and size plus a one-pixel border, and its interior.

    Producers write into the interior (``out=``), then the border is filled in place: that saves
    the full copy a separate padding step makes of a map that is about to be convolved.
    """
    b, _, h, w = like.shape
    buf = torch.empty((b, channels, h + 2, w + 2), dtype=like.dtype, device=like.device,
                      memory_format=torch.channels_last)
    return buf, buf[..., 1:-1, 1:-1]


def fill_border_(buf: torch.Tensor, mode: str) -> torch.Tensor:
    """Fill the one-pixel border of ``buf`` from its interior, as ``F.pad(interior, 1, mode)`` would."""
    inner = 2 if mode == "reflect" else 1  # the row/column mirrored or repeated into the border
    buf[..., 0, 1:-1] = buf[..., inner, 1:-1]
    buf[..., -1, 1:-1] = buf[..., -1 - inner, 1:-1]
    buf[..., :, 0] = buf[..., :, inner]
    buf[..., :, -1] = buf[..., :, -1 - inner]
    return buf


def _conv(conv: nn.Conv2d, x: torch.Tensor, padded: bool = False) -> torch.Tensor:
    """``conv(x)``; ``padded``: ``x`` already carries the layer's one-pixel reflect border."""
    if padded:
        return F.conv2d(x, conv.weight, conv.bias)
    if conv.padding_mode == "reflect":
        p = conv.padding
        return F.conv2d(F.pad(x, (p[1], p[1], p[0], p[0]), mode="reflect"), conv.weight, conv.bias,
                        dilation=conv.dilation)
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation)


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """``x.amax(dim=(2, 3))`` of a channels-last map by halving it with ``torch.maximum``.

    The reduction kernel runs an order of magnitude below memory speed on channels-last maps;
    elementwise maxima of the two halves vectorise, and a maximum is exact in any order.
    """
    flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])
    while flat.shape[1] > 1:
        half = flat.shape[1] // 2
        head = torch.maximum(flat[:, :half], flat[:, half:2 * half])
        if flat.shape[1] % 2:
            torch.maximum(head[:, :1], flat[:, -1:], out=head[:, :1])
        flat = head
    return flat[:, 0]


def _conv_act(conv: nn.Conv2d, x: torch.Tensor, padded: bool = False) -> torch.Tensor:
    """A folded conv-BN-LeakyReLU triple (BN is in ``conv``), the activation in place."""
    return F.leaky_relu_(_conv(conv, x, padded), SLOPE)


class FastConvBlock(nn.Module):
    """:class:`~cldyn_cli.models.vfn.ConvBlock` (BN folded) with in-place activations and residual add."""

    def __init__(self, block: ConvBlock) -> None:
        super().__init__()
        self.conv1, self.conv2, self.squeeze = block.conv1, block.conv2, block.squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = torch.cat([x, _conv_act(self.conv1[0], x)], dim=1)
        c2 = torch.cat([c1, _conv_act(self.conv2[0], c1)], dim=1)
        return F.leaky_relu_(pointwise_conv(self.squeeze, c2), SLOPE).add_(x)


class FastEncoder(nn.Module):
    """One branch's stem and CB blocks."""

    def __init__(self, stem: nn.Sequential, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(FastConvBlock(b) for b in blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(x))

    def first(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and block 0: the features the first compensation block sees."""
        return self.blocks[0](_conv_act(self.stem[3], _conv_act(self.stem[0], x)))

    def rest(self, x: torch.Tensor, after_block: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None
             ) -> torch.Tensor:
        """The branch's features from block 0's output ``x``; ``after_block(i, .)`` follows block i, as in
        :meth:`~cldyn_cli.models.vfn.Encoder.forward`."""
        for i, block in enumerate(self.blocks):
            if i:
                x = block(x)
            if after_block is not None:
                x = after_block(i, x)
        return x


class FastFusion(nn.Module):
    """FRB1 with the separable gradient, padded buffers, and the attention branches' last convolutions merged."""

    def __init__(self, fusion: GradientAttentionFusion) -> None:
        super().__init__()
        self.mlp_avg, self.mlp_max = fusion.mlp_avg, fusion.mlp_max
        self.hidden_avg, self.hidden_max = fusion.conv_avg[0], fusion.conv_max[0]
        last_avg, last_max = fusion.conv_avg[2], fusion.conv_max[2]
        self.spatial = nn.Conv2d(2 * last_avg.in_channels, last_avg.out_channels, 3, padding=1, padding_mode="reflect")
        with torch.no_grad():
            self.spatial.weight.copy_(torch.cat([last_avg.weight, last_max.weight], dim=1))
            self.spatial.bias.copy_(last_avg.bias + last_max.bias)

    def gradients(self, f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
        return padded_gradient_magnitude(self._couple(f_ir, f_vis))

    channel_attention = GradientAttentionFusion.channel_attention

    @staticmethod
    def _couple(f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
        """Both branches' features, replicate-padded by one pixel (for the gradient)."""
        buf, inner = padded_buffer(f_ir, f_ir.shape[1] + f_vis.shape[1])
        torch.cat([f_ir, f_vis], dim=1, out=inner)
        return fill_border_(buf, "replicate")

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor,
                channel_attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The attention-weighted features, reflect-padded by one pixel for the decoder's first convolution.

        Each step is a method of its own so that its intermediate maps are freed when it returns
        (on a 512-pixel tile the 64-channel hidden map alone is 80 MB).
        """
        couple = self._couple(f_ir, f_vis)
        attention = self._attention(padded_gradient_magnitude(couple), channel_attention)
        out, out_inner = padded_buffer(attention, attention.shape[1])
        torch.mul(attention, couple[..., 1:-1, 1:-1], out=out_inner)
        return fill_border_(out, "reflect")

    def _attention(self, g: torch.Tensor, channel_attention: Optional[torch.Tensor]) -> torch.Tensor:
        """sigmoid(channel attention x spatial attention) from the gradient map ``g``."""
        if channel_attention is None:
            channel_attention = self.channel_attention(g.mean(dim=(2, 3)), channel_max(g))
        return _conv(self.spatial, self._hidden(g), padded=True).mul_(channel_attention).sigmoid_()

    def _hidden(self, g: torch.Tensor) -> torch.Tensor:
        """Both attention branches' hidden maps, side by side and reflect-padded for the merged convolution."""
        avg, avg_inner = padded_buffer(g, g.shape[1])
        avg_pool3(g, out=avg_inner)
        mx, mx_inner = padded_buffer(g, g.shape[1])
        max_pool3(g, out=mx_inner)
        half = self.hidden_avg.out_channels
        hidden, parts = padded_buffer(g, 2 * half)
        torch.clamp(_conv(self.hidden_avg, fill_border_(avg, "reflect"), padded=True), min=0.0, out=parts[:, :half])
        del avg  # before the second branch's convolution allocates its output
        torch.clamp(_conv(self.hidden_max, fill_border_(mx, "reflect"), padded=True), min=0.0, out=parts[:, half:])
        return fill_border_(hidden, "reflect")


class FastDecoder(nn.Module):
    """FRB2: reduce, CB blocks, head, tanh mapped to [0, 1], in place where nothing else reads."""

    def __init__(self, reduce: nn.Sequential, blocks: nn.ModuleList, head: nn.Sequential) -> None:
        super().__init__()
        self.reduce, self.head = reduce, head
        self.blocks = nn.ModuleList(FastConvBlock(b) for b in blocks)

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        """``padded``: FRB1's output with its one-pixel reflect border."""
        x = _conv_act(self.reduce[0], padded, padded=True)
        for block in self.blocks:
            x = block(x)
        return _conv(self.head[3], _conv_act(self.head[0], x)).tanh_().add_(1.0).div_(2.0)


class InferenceVFN(nn.Module):
    """The inference form of a VFN: what :class:`~cldyn_cli.fusion.Fuser` and compensated fusion run."""

    def __init__(self, model: VFN) -> None:
        super().__init__()
        folded = fold_batchnorm(model)
        self.config = folded.config
        self.ir_encoder = FastEncoder(folded.ir_encoder.stem, folded.ir_encoder.blocks)
        self.vis_encoder = FastEncoder(folded.vis_encoder.stem, folded.vis_encoder.blocks)
        self.fusion = FastFusion(folded.fusion)
        self.decoder = FastDecoder(folded.decoder.reduce, folded.decoder.blocks, folded.decoder.head)

    receptive_radius = VFN.receptive_radius  # reads only the config

    def encode(self, ir: torch.Tensor, vis_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ir_encoder(ir), self.vis_encoder(vis_y)

    def first_features(self, ir: torch.Tensor, vis_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both branches' features after block 0, before any hook: a base pass and a compensated
        pass of the same images share them."""
        return self.ir_encoder.first(ir), self.vis_encoder.first(vis_y)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor, channel_attention: Optional[torch.Tensor] = None,
                prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The fused Y before any output stretch (:class:`~cldyn_cli.fusion.Fuser` stretches whole images)."""
        return self.from_first(self.first_features(ir, vis_y), ir, vis_y, channel_attention=channel_attention,
                               prior=prior)

    prior = VFN.prior  # reads only the config

    def from_first(self, first: tuple[torch.Tensor, torch.Tensor], ir: torch.Tensor, vis_y: torch.Tensor,
                   hook: Optional[BlockHook] = None, channel_attention: Optional[torch.Tensor] = None,
                   prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The fused Y (no stretch) from :meth:`first_features`; ``hook`` and ``prior`` as in :meth:`VFN.forward`."""
        f_ir = self.ir_encoder.rest(first[0], None if hook is None else lambda i, x: hook("ir", i, x))
        f_vis = self.vis_encoder.rest(first[1], None if hook is None else lambda i, x: hook("vis", i, x))
        fused = self.decoder(self.fusion(f_ir, f_vis, channel_attention))
        if self.config.residual:
            return fused.add_(self.prior(ir, vis_y) if prior is None else prior).sub_(0.5).clamp_(0.0, 1.0)
        return fused


def inference_vfn(model: VFN) -> InferenceVFN:
    """The inference form of ``model`` (a copy in eval mode; ``model`` itself is left as it is)."""
    return InferenceVFN(model).eval()
