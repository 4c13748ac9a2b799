"""The base visible-infrared fusion network (VFN), layer for layer as docs/method.md describes.

The structure matches the authors' released model one to one (see ``convert.py`` for the
name mapping), so their weights load into it. Each encoder exposes the point after every block
so that the semantic compensation can be injected there.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cldyn_cli.config import setting
from cldyn_cli.models.fast_ops import channels_last_grad, pointwise_conv
from cldyn_cli.models.prior import PRIORS, residual_prior

SLOPE = 0.2

# Called after encoder block i of a branch ("ir" or "vis") with its output; returns the
# (possibly compensated) features that feed block i + 1.
BlockHook = Callable[[str, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class VFNConfig:
    """Shape of a VFN; stored in every checkpoint."""

    blocks: int = setting(4, min=1)  # L: blocks per encoder and in the decoder
    channels: int = setting(8, min=1)  # feature width of each branch
    stretch: bool = False  # stretch each fused image to the full range [0, 1] (see stretch_range)
    # fraction of pixels the stretch may saturate at each end (0: min to max)
    stretch_clip: float = setting(0.0, min=0.0, max=0.49)
    residual: bool = False  # predict a correction to a prior image instead of the fused image itself
    prior: str = setting("max", choices=PRIORS)  # what a residual model corrects (models/prior.py)

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn_act(cin: int, cout: int) -> list[nn.Module]:
    """Conv3x3 (reflect padding), BatchNorm, LeakyReLU(0.2)."""
    return [nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(cout), nn.LeakyReLU(SLOPE)]


class ConvBlock(nn.Module):
    """Block "CB": two densely connected dilated 3x3 convolutions and a 1x1 squeeze, residual."""

    def __init__(self, channels: int = 8, growth: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, growth, 3, padding=2, dilation=2),
                                   nn.BatchNorm2d(growth), nn.LeakyReLU(SLOPE))
        self.conv2 = nn.Sequential(nn.Conv2d(channels + growth, growth, 3, padding=2, dilation=2),
                                   nn.BatchNorm2d(growth), nn.LeakyReLU(SLOPE))
        self.squeeze = nn.Conv2d(channels + 2 * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = torch.cat([x, channels_last_grad(self.conv1(x))], dim=1)
        c2 = torch.cat([c1, channels_last_grad(self.conv2(c1))], dim=1)
        return channels_last_grad(x + F.leaky_relu(pointwise_conv(self.squeeze, c2), SLOPE))


class Encoder(nn.Module):
    """One modality's feature extractor: a two-conv stem then L CB blocks."""

    def __init__(self, blocks: int, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_act(1, channels // 2), *conv_bn_act(channels // 2, channels))
        self.blocks = nn.ModuleList(ConvBlock(channels, channels) for _ in range(blocks))

    def forward(self, x: torch.Tensor, after_block: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None
                ) -> torch.Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if after_block is not None:
                x = after_block(i, x)
        return x


def spatial_gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| per channel with Sobel kernels normalised by 8 and replicate borders.

    This is what ``kornia.filters.spatial_gradient(x).abs().sum(dim=2)`` computes, without kornia.
    """
    return padded_gradient_magnitude(F.pad(x, (1, 1, 1, 1), mode="replicate"))


def padded_gradient_magnitude(p: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_gradient_magnitude` of a map given replicate-padded by one.

    Sobel x is [1, 2, 1] down the rows of the horizontal central difference (and y likewise), so it
    is a few shifted subtractions and additions, which run on every channel at once in whatever
    memory layout the map has. A 1-channel convolution per channel needed a layout copy and ran
    near 1 GFLOP/s (40% of the fusion time); in training its backward took four times as long as
    this whole function forward and backward. The in-place steps overwrite only fresh maps whose
    values no backward formula reads.
    """
    dx = p[..., :, 2:] - p[..., :, :-2]  # (H + 2, W)
    dy = p[..., 2:, :] - p[..., :-2, :]  # (H, W + 2)
    gx = (dx[..., :-2, :] + dx[..., 2:, :]).add_(dx[..., 1:-1, :], alpha=2.0)
    gy = (dy[..., :, :-2] + dy[..., :, 2:]).add_(dy[..., :, 1:-1], alpha=2.0)
    return gx.abs_().add_(gy.abs_()).div_(8.0)


def _shifted3(x: torch.Tensor, pad_value: float, reduce: Callable[..., torch.Tensor],
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reduce each pixel's 3x3 neighbourhood separably (rows, then columns) with constant padding.

    ``reduce(a, b, out=...)`` is an elementwise torch function; the result goes to ``out`` when
    given (inference writes it straight into the interior of a padded buffer).
    """
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), value=pad_value)
    rows = reduce(reduce(p[..., :, 0:w], p[..., :, 1:w + 1]), p[..., :, 2:w + 2])
    return reduce(reduce(rows[..., 0:h, :], rows[..., 1:h + 1, :]), rows[..., 2:h + 2, :], out=out)


def max_pool3(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride=1, padding=1)``, computed separably (several times faster on CPU)."""
    return _shifted3(x, float("-inf"), torch.maximum, out)


def avg_pool3(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.avg_pool2d(x, 3, stride=1, padding=1)`` (zeros counted, divisor 9), computed separably."""
    return _shifted3(x, 0.0, torch.add, out).div_(9.0)


class GradientAttentionFusion(nn.Module):
    """Fusion "FRB1": channel x spatial attention computed from the features' gradients."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        hidden = channels * 2

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

        def convs() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 3, padding=1, padding_mode="reflect"))

        self.mlp_avg, self.mlp_max = mlp(), mlp()
        self.conv_avg, self.conv_max = convs(), convs()

    def gradients(self, f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
        """g: the gradient magnitude of every channel of both branches (B, 2C, H, W)."""
        return torch.cat([spatial_gradient_magnitude(f_ir), spatial_gradient_magnitude(f_vis)], dim=1)

    def channel_attention(self, g_mean: torch.Tensor, g_max: torch.Tensor) -> torch.Tensor:
        """MLP(GAP(g)) + MLP(GMP(g)) from the pooled statistics, shaped (B, 2C, 1, 1)."""
        return (self.mlp_avg(g_mean) + self.mlp_max(g_max))[:, :, None, None]

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor,
                channel_attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention-weighted concatenation. ``channel_attention`` may be given from whole-image
        statistics, which is how tiled fusion stays identical to untiled fusion."""
        couple = torch.cat([f_ir, f_vis], dim=1)
        g = self.gradients(f_ir, f_vis)  # in the features' memory layout, as everything after it
        if channel_attention is None:
            channel_attention = self.channel_attention(g.mean(dim=(2, 3)), g.amax(dim=(2, 3)))
        # Equal maxima; in training max_pool2d's backward (an index scatter) is far cheaper than the
        # separable form's four masked fills, and it passes a tie's gradient on as the authors' does.
        pooled = F.max_pool2d(g, 3, stride=1, padding=1) if g.requires_grad else max_pool3(g)
        spatial = self.conv_avg(avg_pool3(g)) + self.conv_max(pooled)
        return couple * torch.sigmoid(channel_attention * spatial)


class Decoder(nn.Module):
    """Reconstruction "FRB2": reduce, L CB blocks, two convs, tanh mapped to [0, 1]."""

    def __init__(self, blocks: int, channels: int = 8, zero_last: bool = False) -> None:
        super().__init__()
        self.reduce = nn.Sequential(*conv_bn_act(2 * channels, channels))
        self.blocks = nn.ModuleList(ConvBlock(channels, channels) for _ in range(blocks))
        self.head = nn.Sequential(*conv_bn_act(channels, channels // 2),
                                  nn.Conv2d(channels // 2, 1, 3, padding=1, padding_mode="reflect"), nn.Tanh())
        if zero_last:  # a residual model starts as exactly max(IR, Y)
            nn.init.zeros_(self.head[3].weight)
            nn.init.zeros_(self.head[3].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        for block in self.blocks:
            x = block(x)
        return (self.head(x) + 1.0) / 2.0


class VFN(nn.Module):
    """Base fusion network: (IR, visible Y), each (B, 1, H, W) in [0, 1] -> fused Y in [0, 1]."""

    def __init__(self, config: VFNConfig = VFNConfig()) -> None:
        super().__init__()
        self.config = config
        self.ir_encoder = Encoder(config.blocks, config.channels)
        self.vis_encoder = Encoder(config.blocks, config.channels)
        self.fusion = GradientAttentionFusion(2 * config.channels)
        self.decoder = Decoder(config.blocks, config.channels, zero_last=config.residual)

    def encode(self, ir: torch.Tensor, vis_y: torch.Tensor,
               hook: Optional[BlockHook] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both branches; ``hook`` sees (and may replace) every block's output."""
        if hook is None:
            return self.ir_encoder(ir), self.vis_encoder(vis_y)
        return (self.ir_encoder(ir, lambda i, x: hook("ir", i, x)),
                self.vis_encoder(vis_y, lambda i, x: hook("vis", i, x)))

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor, hook: Optional[BlockHook] = None,
                channel_attention: Optional[torch.Tensor] = None, stretch: Optional[bool] = None,
                prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fused Y; stretched to [0, 1] per image when the config says so (``stretch`` overrides it:
        training sees the raw output, and tiled fusion stretches the assembled image). ``prior``:
        :meth:`prior` of these images when already computed (two passes over the same images share it)."""
        f_ir, f_vis = self.encode(ir, vis_y, hook)
        fused = self.decoder(self.fusion(f_ir, f_vis, channel_attention))
        if self.config.residual:  # the decoder's [0, 1] output, centred, corrects the prior image
            fused = ((self.prior(ir, vis_y) if prior is None else prior) + fused - 0.5).clamp(0.0, 1.0)
        return self.stretched(fused) if (self.config.stretch if stretch is None else stretch) else fused

    def prior(self, ir: torch.Tensor, vis_y: torch.Tensor) -> Optional[torch.Tensor]:
        """The image a residual model corrects (models/prior.py); None for a model that is not residual."""
        return residual_prior(ir, vis_y, self.config.prior) if self.config.residual else None

    def stretched(self, fused: torch.Tensor) -> torch.Tensor:
        """``fused`` with this model's output stretch applied (whatever the config's on/off switch)."""
        return stretch_range(fused, self.config.stretch_clip)

    def receptive_radius(self) -> int:
        """Pixels of context each output pixel depends on (besides the global channel attention).

        Stem 2, each CB 4, gradient 1, pooling 1, spatial-attention convs 2, reduce 1, head 2.
        """
        return 9 + 8 * self.config.blocks


def stretch_range(y: torch.Tensor, clip: float = 0.0, eps: float = 1e-6) -> torch.Tensor:
    """A per-image linear contrast stretch of (B, C, H, W) images to the full range [0, 1].

    With ``clip`` = 0 each image's darkest value becomes 0 and its brightest 1, as CDDFuse does to
    its output; with ``clip`` = c the values at the c and 1 - c quantiles do, and the at most c of
    the pixels beyond each end saturate, so that a few outliers cannot cancel the stretch. A flat
    image stays as it is.
    """
    return apply_stretch(y, *stretch_bounds(y, clip), eps)


def stretch_bounds(y: torch.Tensor, clip: float = 0.0, select: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(low end, span) of :func:`stretch_range` per image, each (B, 1, 1, 1).

    The quantile index is computed from tensors, so exported graphs keep it right for every image
    size. ``select`` finds the same two quantiles by selection (linear time) instead of sorting
    every pixel, for eager inference, where graphs need not be exported.
    """
    flat = y.flatten(1)
    if clip > 0:
        last = torch.ones_like(flat[:1]).sum(dim=1, keepdim=True) - 1  # n - 1, as a tensor
        low = (last * clip).floor().long().expand(flat.shape[0], 1)
        if select:
            k, n = int(low[0, 0]), flat.shape[1]
            lo, hi = flat.kthvalue(k + 1, dim=1, keepdim=True).values, flat.kthvalue(n - k, dim=1, keepdim=True).values
        else:
            ordered = flat.sort(dim=1).values
            lo, hi = ordered.gather(1, low), ordered.gather(1, last.long().expand(flat.shape[0], 1) - low)
    else:
        lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return lo.view(-1, 1, 1, 1), (hi - lo).view(-1, 1, 1, 1)


def apply_stretch(y: torch.Tensor, lo: torch.Tensor, span: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``y`` mapped from [lo, lo + span] onto [0, 1] and clamped; images with a span under ``eps`` stay.

    Per pixel, so it may run on any part of the images (fusion stretches large images band by band).
    """
    flat_image = span < eps
    stretched = (y - lo) / torch.where(flat_image, torch.ones_like(span), span)
    return torch.where(flat_image, y, stretched.clamp(0.0, 1.0))


def with_stretch(model: VFN, stretch: Optional[bool]) -> VFN:
    """``model`` with its output stretch switched on or off (None: as its checkpoint says)."""
    if stretch is not None:
        model.config = replace(model.config, stretch=stretch)
    return model


def fold_batchnorm(model: VFN) -> VFN:
    """An inference copy with every BatchNorm folded into the convolution before it.

    In eval mode BN is an affine map per channel, so it can live in the convolution's weights;
    that removes a full pass over every feature map (same output to float rounding).
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return folded


def batchnorm_shadowed_biases(model: nn.Module) -> list[nn.Parameter]:
    """Biases of the convolutions that feed a BatchNorm directly.

    In training mode BatchNorm subtracts the batch mean, so such a bias has no effect on the
    output and its gradient is zero; computed in floats it is rounding noise instead, which Adam
    would normalise into full-size random steps. Training sets these gradients to exactly zero.
    """
    biases = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for conv, norm in zip(seq[:-1], seq[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and conv.bias is not None:
                    biases.append(conv.bias)
    return biases
