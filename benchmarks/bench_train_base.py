"""The speed of one `train-base` step against the machine's convolution speed.

Times the optimisation step that `cldyn train-base` runs (forward, the fusion loss, backward,
Adam; ``cldyn_cli.training.base.optimise_step``) on a batch of random crops, and the reference
64->64 3x3 channels-last convolution on a map of the same pixel count, in turns in one process.
FLOPs are counted with ``torch.utils.flop_counter`` over the whole step (forward and backward).

Usage: python benchmarks/bench_train_base.py [--batch 16] [--crop 256] [--blocks 4] [--residual]
                                             [--device cpu|cuda] [--repeats 3] [--profile ROWS]
                                             [--system-malloc]
Read "% of conv" as in profile_fuse.py: the step's FLOP/s as a share of the convolution's.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from reference import Clock, count_flops, gflops, reference_conv

from cldyn_cli.models.vfn import VFN, VFNConfig, batchnorm_shadowed_biases
from cldyn_cli.runtime import TRAINING_BLOCKS, reuse_freed_memory
from cldyn_cli.training.base import TrainBaseConfig, optimise_step


def main() -> None:
    defaults = TrainBaseConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=defaults.batch_size)
    parser.add_argument("--crop", type=int, default=defaults.crop)
    parser.add_argument("--blocks", type=int, default=defaults.blocks)
    parser.add_argument("--residual", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=int, metavar="ROWS", default=0,
                        help="then print torch.profiler's table of one step, this many operators")
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's default malloc settings (as train-base did before it reused freed memory)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and not args.system_malloc:
        reuse_freed_memory(TRAINING_BLOCKS)  # as train-base does

    config = TrainBaseConfig(crop=args.crop, batch_size=args.batch, blocks=args.blocks, residual=args.residual)
    torch.manual_seed(0)
    model = VFN(VFNConfig(blocks=config.blocks, residual=config.residual))
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    shadowed = batchnorm_shadowed_biases(model)
    batch = torch.rand(args.batch, 2, args.crop, args.crop, device=device).contiguous(memory_format=torch.channels_last)

    def step() -> object:
        return optimise_step(model, opt, shadowed, batch, config, config.lr)

    flops = count_flops(step)
    side = round((args.batch * args.crop * args.crop) ** 0.5)  # the convolution runs on as many pixels
    conv, conv_flops = reference_conv(side, side, device)
    clock = Clock(device)
    clock.run({"conv": conv, "train-base step": step}, args.repeats)
    print(f"train-base step: batch {args.batch} x {args.crop}x{args.crop}, L={args.blocks}, on {args.device} "
          f"({torch.get_num_threads()} thread(s)), best of {args.repeats}; {flops / 1e9:.1f} GFLOP forward+backward")
    print(f"{'':16} {'wall s':>8} {'GFLOP/s':>8} {'% conv':>7} {'cpu s':>8} {'% conv':>7}")
    for name, work in (("conv", conv_flops), ("train-base step", flops)):
        wall = gflops(work, clock.wall[name]) / gflops(conv_flops, clock.wall["conv"])
        cpu = gflops(work, clock.cpu[name]) / gflops(conv_flops, clock.cpu["conv"])
        print(f"{name:16} {clock.wall[name]:8.3f} {gflops(work, clock.wall[name]):8.1f} {100 * wall:6.1f}% "
              f"{clock.cpu[name]:8.3f} {100 * cpu:6.1f}%")
    if args.profile:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile))


if __name__ == "__main__":
    main()
