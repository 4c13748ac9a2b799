"""What the profiling benchmarks measure against: FLOP counts, and the convolution they compare to.

A network's efficiency is its useful FLOPs per second (FLOPs of the plain trained VFN, counted by
``torch.utils.flop_counter``, whatever restructuring the timed path does) as a fraction of the
FLOPs per second of one plain 64->64 3x3 channels-last convolution timed in the same process on
the same image size: a number that means the same on a 2-core laptop and a 64-core server, and
that survives a machine shared with other work better than seconds do.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

CONV_CHANNELS = 64


def _mkldnn_conv_flops(x_shape: list[int], w_shape: list[int], *args: object, out_shape: list[int] | None = None,
                       **kwargs: object) -> int:
    """What the flop counter counts for a convolution of these shapes."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward, and backward if ``fn`` runs it).

    Convolutions called straight through oneDNN (the 1x1 squeezes) count like any other.
    """
    mapping = {torch.ops.aten.mkldnn_convolution: _mkldnn_conv_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Best-of-N wall and CPU seconds of several variants, timed in turn (A, B, A, B, ...).

    Alternating spreads the other work on a shared machine over every variant alike; the best
    repeat is the one least disturbed.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, variants: dict[str, Callable[[], object]], repeats: int) -> None:
        for fn in variants.values():  # warm-up: oneDNN primitives, allocator, caches
            fn()
        sync(self.device)
        for _ in range(repeats):
            for name, fn in variants.items():
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                sync(self.device)
                self.wall[name] = min(self.wall.get(name, float("inf")), time.perf_counter() - wall)
                self.cpu[name] = min(self.cpu.get(name, float("inf")), time.process_time() - cpu)


def reference_conv(height: int, width: int, device: torch.device, dtype: torch.dtype = torch.float32
                   ) -> tuple[Callable[[], object], int]:
    """(one call of the 64->64 3x3 channels-last convolution on a (1, 64, H, W) map, its FLOPs)."""
    conv = torch.nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1).to(device, dtype,
                                                                         memory_format=torch.channels_last)
    x = torch.rand(1, CONV_CHANNELS, height, width, device=device, dtype=dtype
                   ).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def call() -> object:
        return conv(x)

    return call, 2 * CONV_CHANNELS * CONV_CHANNELS * 9 * height * width


def gflops(flops: int, seconds: float) -> float:
    return flops / seconds / 1e9
