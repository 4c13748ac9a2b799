"""Where base fusion spends its time, and how close it runs to the machine's convolution speed.

Times, in turns in one process: the reference 64->64 3x3 channels-last convolution, the plain
trained VFN (BatchNorm folded: the path fusion took before the inference form) and
``Fuser.fuse_y`` (the inference form, what `cldyn fuse` runs), on one pair of the given size. FLOPs
are those of the plain VFN (``torch.utils.flop_counter``), so both fusion rows divide the same
work by their own time. Then prints torch.profiler's per-operator table of one ``Fuser.fuse_y``.

Usage: python benchmarks/profile_fuse.py [--size 640x480] [--device cpu|cuda] [--repeats 5]
                                         [--base CKPT] [--rows 25] [--shapes] [--compile]
``--compile`` adds the plain VFN under ``torch.compile`` (Inductor, with weight freezing), timed
after its first call, which compiles it (that time is printed too).
Read "% of conv": the share of the reference convolution's FLOP/s that fusion achieves (wall
clock, and process CPU time, which a busy machine disturbs less when single-threaded).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from reference import Clock, count_flops, gflops, reference_conv

from cldyn_cli.fusion import Fuser
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.models.vfn import fold_batchnorm


def compiled_call(plain: torch.nn.Module, ir: torch.Tensor, vis_y: torch.Tensor) -> Callable[[], object]:
    """``plain`` compiled by Inductor with its weights frozen as constants; compiles on the spot."""
    import torch._inductor.config as inductor

    inductor.freezing = True  # constant weights let Inductor prepack them for oneDNN
    compiled = torch.compile(lambda a, b: plain(a, b, stretch=False))
    start = time.perf_counter()
    with torch.no_grad():
        difference = (compiled(ir, vis_y) - plain(ir, vis_y, stretch=False)).abs().max().item()
    print(f"torch.compile: first call (compilation) {time.perf_counter() - start:.1f} s, "
          f"largest difference from the plain VFN {difference:.1e}")
    return torch.no_grad()(lambda: compiled(ir, vis_y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the pair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", type=Path, help="base checkpoint (default: the shipped model)")
    parser.add_argument("--rows", type=int, default=25, help="operators in the profiler table")
    parser.add_argument("--shapes", action="store_true", help="one profiler row per operator and input shape")
    parser.add_argument("--compile", action="store_true", help="also time the plain VFN under torch.compile")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)

    model, _ = load_vfn(args.base, device)
    fuser = Fuser(model, device)
    plain = fold_batchnorm(model).to(memory_format=torch.channels_last)
    ir = torch.rand(1, 1, height, width, device=device).contiguous(memory_format=torch.channels_last)
    vis_y = torch.rand(1, 1, height, width, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        flops = count_flops(lambda: model(ir, vis_y))
    conv, conv_flops = reference_conv(height, width, device)

    @torch.no_grad()
    def plain_call() -> object:
        return plain(ir, vis_y, stretch=False)

    variants = {"conv": conv, "plain VFN (BN folded)": plain_call, "Fuser.fuse_y": lambda: fuser.fuse_y(ir, vis_y)}
    if args.compile:
        variants["torch.compile(plain VFN)"] = compiled_call(plain, ir, vis_y)
    clock = Clock(device)
    clock.run(variants, args.repeats)
    threads = torch.get_num_threads()
    print(f"{width}x{height} on {args.device} ({threads} thread(s)), best of {args.repeats}; "
          f"fusion {flops / 1e9:.2f} GFLOP, reference 64->64 3x3 conv {conv_flops / 1e9:.2f} GFLOP")
    print(f"{'':24} {'wall s':>8} {'GFLOP/s':>8} {'% conv':>7} {'cpu s':>8} {'% conv':>7}")
    for name in clock.wall:
        work = conv_flops if name == "conv" else flops
        wall = gflops(work, clock.wall[name]) / gflops(conv_flops, clock.wall["conv"])
        cpu = gflops(work, clock.cpu[name]) / gflops(conv_flops, clock.cpu["conv"])
        print(f"{name:24} {clock.wall[name]:8.3f} {gflops(work, clock.wall[name]):8.1f} {100 * wall:6.1f}% "
              f"{clock.cpu[name]:8.3f} {100 * cpu:6.1f}%")
    print(f"speed-up of Fuser.fuse_y over the plain VFN: {clock.wall['plain VFN (BN folded)'] / clock.wall['Fuser.fuse_y']:.2f}x "
          f"(wall), {clock.cpu['plain VFN (BN folded)'] / clock.cpu['Fuser.fuse_y']:.2f}x (cpu)")

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=args.shapes) as prof:
        fuser.fuse_y(ir, vis_y)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
