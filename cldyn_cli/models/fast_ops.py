"""CPU fast paths of the network's operations: the same values as the plain operators, less time.

Each was measured with ``benchmarks/bench_train_base.py`` or ``benchmarks/profile_fuse.py``
(benchmarks/README.md). Graph export (ONNX tracing) always gets the plain operators.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class _ChannelsLastGrad(torch.autograd.Function):
    """The identity, whose backward hands on its gradient in channels-last layout."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def channels_last_grad(x: torch.Tensor) -> torch.Tensor:
    """``x``, with its gradient made channels-last on the way back (training on the CPU).

    A concatenated activation gets its gradient as a channel slice of the concatenation's; the
    LeakyReLU backward of a strided gradient against a channels-last activation runs about 20x
    slower than on matching layouts (a sixth of a training step). Same values either way.
    """
    if not x.requires_grad or not x.is_contiguous(memory_format=torch.channels_last) or exporting():
        return x
    return _ChannelsLastGrad.apply(x)


def exporting() -> bool:
    """Whether a graph is being traced for export (which wants plain operators only)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _onednn_1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.mkldnn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], 1)


class _Pointwise(torch.autograd.Function):
    """A 1x1 convolution of a channels-last map, forward and backward through oneDNN and one GEMM.

    PyTorch sends both directions of a 1x1 convolution down a slower path; here the input's
    gradient is the 1x1 convolution of the output's gradient with the transposed weight, and the
    weight's gradient is one matrix product over all pixels (channels-last maps are pixel-major).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _onednn_1x1(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad  # a frozen network needs only grad_x
        grad_x = _onednn_1x1(grad, weight.transpose(0, 1).contiguous(), None) if needs_x else None
        pixels_grad = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # (pixels, out), no copy
        grad_weight = None
        if needs_weight:
            pixels_x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (pixels, in)
            grad_weight = (pixels_grad.t() @ pixels_x).view_as(weight)
        return grad_x, grad_weight, pixels_grad.sum(0) if needs_bias else None


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution; on the CPU straight through oneDNN, which ``F.conv2d`` passes over for 1x1
    kernels in favour of a path measured 1.7x slower (and, when training, see :class:`_Pointwise`)."""
    fast = x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
    if not fast or exporting() or conv.bias is None:
        return conv(x)
    if torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last):
        return _Pointwise.apply(x, conv.weight, conv.bias)
    return _onednn_1x1(x, conv.weight, conv.bias)
