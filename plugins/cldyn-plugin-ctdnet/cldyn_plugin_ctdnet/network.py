"""CTDNet-18: a ResNet-18 encoder and the Complementary Trilateral Decoder (Zhao et al., ACM MM 2021).

The decoder treats three kinds of information in three branches and merges them "coarse, fine,
finer":

- **Semantic path** (1/32 -> 1/16): global context (``path1_1``: global average pool of the last
  stage), the last stage itself (``path1_2``) and the fourth stage (``path1_3``), merged by two
  feature fusion modules (``fuse1_1``, ``fuse1_2``).
- **Spatial path** (1/8): the second stage through a spatial attention module (``path2``), merged
  with the semantic path by the cross aggregation module ``fuse12``.
- **Boundary path** (1/4): the first stage (``path3``) merged with the upsampled semantic features
  (``fuse3``); an edge head supervises it. The boundary refinement module ``fuse23`` merges it with
  the semantic/spatial result, and ``head_1`` predicts the saliency map from that.

Module names follow the authors' code, so their CTDNet-18 checkpoints load unchanged; the encoder
is torchvision's ResNet-18 under ``bkbone`` (same parameter names as theirs, ``fc`` removed).
All ReLUs run out of place, so a forward hook on any layer (e.g. ``fuse23.bn_2``) sees that
layer's own output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_SIZE = 352  # the authors' test resolution (training used 224..352)
# The authors' normalisation of 0..255 RGB (DUTS statistics).
MEAN = (124.55, 118.90, 102.94)
STD = (56.77, 55.97, 57.50)
CHANNELS = 64  # decoder width


@dataclass
class CTDNetConfig:
    """What a CTDNet checkpoint needs besides its tensors; ``--task-config`` YAML may set these."""

    size: int = DEFAULT_SIZE  # images are resized to size x size before the network
    seed: int = 0  # initialises an untrained network (tests, or training from scratch)


class CTDNetOutput(NamedTuple):
    """Logits at the input resolution: the saliency map, the edge map, and the deep-supervision maps
    of the fused semantic/spatial features, the semantic path, the last stage and the global context."""

    saliency: Tensor
    edge: Tensor
    aux: tuple[Tensor, ...]  # empty unless asked for (with_aux=True)


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


def _up(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    # align_corners=True as in the authors' code: their weights expect it
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class FFM(nn.Module):
    """Feature fusion module: the product of two maps, then two conv-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_1, self.bn_1 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv_2, self.bn_2 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = F.relu(self.bn_1(self.conv_1(a * b)))
        return F.relu(self.bn_2(self.conv_2(x)))


class CAM(nn.Module):
    """Cross aggregation module: semantic (coarse) and spatial (fine) features meet at both scales.

    The fine map is downsampled to meet the coarse one, the coarse map is upsampled to meet the fine
    one; both products are refined and then fused at the fine scale.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv3x3(channels, channels, stride=2), nn.BatchNorm2d(channels))
        self.conv_1, self.bn_1 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv_2, self.bn_2 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.mul = FFM(channels)

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        fine_small = F.relu(self.down(fine))
        at_fine = F.relu(self.bn_1(self.conv_1(fine * _up(coarse, fine.shape[2:]))))
        at_coarse = F.relu(self.bn_2(self.conv_2(fine_small * coarse)))
        return self.mul(at_fine, _up(at_coarse, fine.shape[2:]))


class SAM(nn.Module):
    """Spatial attention module: a sigmoid map from channel mean and max reweights the features."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_atten = _conv3x3(2, 1)
        self.conv, self.bn = _conv3x3(cin, cout), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        x = x * torch.sigmoid(self.conv_atten(stats))
        return F.relu(self.bn(self.conv(x)))


class BRM(nn.Module):
    """Boundary refinement module: sum of region and boundary features, channel attention (global
    pool, 1x1 conv, sigmoid) as a residual gate, then two conv-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_atten = _conv1x1(channels, channels)
        self.conv_1, self.bn_1 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv_2, self.bn_2 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)

    def forward(self, region: Tensor, boundary: Tensor) -> Tensor:
        x = region + boundary
        gate = torch.sigmoid(self.conv_atten(F.adaptive_avg_pool2d(x, 1)))
        x = x * gate + x
        x = F.relu(self.bn_1(self.conv_1(x)))
        return F.relu(self.bn_2(self.conv_2(x)))


def _resnet18() -> nn.Module:
    """torchvision's ResNet-18 without its classifier, all ReLUs out of place."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = nn.Identity()  # no parameters: state-dict keys equal the authors' backbone
    net.avgpool = nn.Identity()
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return net


class CTDNet(nn.Module):
    """CTDNet-18. Input: normalised RGB (see :func:`preprocess`); output: :class:`CTDNetOutput`."""

    def __init__(self) -> None:
        super().__init__()
        c = CHANNELS
        self.bkbone = _resnet18()
        # semantic path
        self.path1_1 = nn.Sequential(_conv1x1(512, c), nn.BatchNorm2d(c))  # global context
        self.path1_2 = nn.Sequential(_conv1x1(512, c), nn.BatchNorm2d(c))  # stage 4 (1/32)
        self.path1_3 = nn.Sequential(_conv1x1(256, c), nn.BatchNorm2d(c))  # stage 3 (1/16)
        # spatial path
        self.path2 = SAM(128, c)  # stage 2 (1/8)
        # boundary path
        self.path3 = nn.Sequential(_conv1x1(64, c), nn.BatchNorm2d(c))  # stage 1 (1/4)
        # fusion modules
        self.fuse1_1 = FFM(c)  # global context x stage 4
        self.fuse1_2 = FFM(c)  # ... x stage 3
        self.fuse12 = CAM(c)  # semantic x spatial
        self.fuse3 = FFM(c)  # stage 1 x semantic -> boundary features
        self.fuse23 = BRM(c)  # (semantic+spatial) with boundary
        # prediction heads
        self.head_1 = _conv3x3(c, 1, bias=True)  # saliency
        self.head_2 = _conv3x3(c, 1, bias=True)  # after fuse12
        self.head_3 = _conv3x3(c, 1, bias=True)  # semantic path
        self.head_4 = _conv3x3(c, 1, bias=True)  # stage 4 with context
        self.head_5 = _conv3x3(c, 1, bias=True)  # global context
        self.head_edge = _conv3x3(c, 1, bias=True)  # boundary
        self.reset_decoder()

    def reset_decoder(self) -> None:
        """The authors' initialisation of everything but the backbone (Kaiming normal, fan-in)."""
        for name, module in self.named_modules():
            if name.startswith("bkbone"):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Backbone stages 1..4 at strides 4, 8, 16, 32."""
        b = self.bkbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        l2 = b.layer1(x)
        l3 = b.layer2(l2)
        l4 = b.layer3(l3)
        l5 = b.layer4(l4)
        return l2, l3, l4, l5

    def forward(self, x: Tensor, with_aux: bool = False) -> CTDNetOutput:
        size = x.shape[2:]
        l2, l3, l4, l5 = self.encode(x)

        context = _up(self.path1_1(F.adaptive_avg_pool2d(l5, 1)), l5.shape[2:])
        top = self.fuse1_1(context, F.relu(self.path1_2(l5)))  # 1/32
        top = _up(top, l4.shape[2:])  # 1/16
        semantic = self.fuse1_2(top, F.relu(self.path1_3(l4)))  # 1/16

        spatial = self.path2(l3)  # 1/8
        region = _up(self.fuse12(semantic, spatial), l2.shape[2:])  # 1/4

        boundary = self.fuse3(F.relu(self.path3(l2)), _up(top, l2.shape[2:]))  # 1/4
        out = self.fuse23(region, boundary)  # 1/4

        saliency = _up(self.head_1(out), size)
        edge = _up(self.head_edge(boundary), size)
        aux: tuple[Tensor, ...] = ()
        if with_aux:
            aux = (_up(self.head_2(region), size), _up(self.head_3(semantic), size),
                   _up(self.head_4(top), size), _up(self.head_5(context), size))
        return CTDNetOutput(saliency, edge, aux)


def build_net(config: CTDNetConfig) -> CTDNet:
    """A freshly initialised network, the same for the same seed, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return CTDNet()


def preprocess(rgb: Tensor, size: int) -> Tensor:
    """Fused RGB in [0, 1] (B, 3, H, W) -> the network's input: size x size, the authors' normalisation.

    Differentiable (bilinear, antialiased when shrinking), so gradients reach the fused image.
    """
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    if tuple(rgb.shape[2:]) != (size, size):
        shrink = rgb.shape[2] > size or rgb.shape[3] > size
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    mean = torch.tensor(MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * 255 - mean) / std
