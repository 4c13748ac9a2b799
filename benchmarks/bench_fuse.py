"""Fuse time per megapixel and peak memory of the base model, up to a 4000x3000 pair, and the
cost of compensated fusion relative to base fusion.

Each size runs in its own process so that the peak resident memory (ru_maxrss) is that size's.
Usage: python benchmarks/bench_fuse.py [--device cpu|cuda] [--sizes 640x480,1920x1080,4000x3000]
       python benchmarks/bench_fuse.py --compensated [--sizes 640x480]
       python benchmarks/bench_fuse.py --compensated --sizes 640x480 --query-strides 1,2,4
The compensated run uses the default compensation of docs/method.md (K=1, E=256, M=4) conditioned on the
built-in toyseg task network; the task network's own forward pass is excluded from its time (it is
reported beside, approximately: its time with a base pass, less a base pass). A query stride above 1
computes A2SI's basis query on a downsampled image, which changes the output (RSCConfig.query_stride).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(width: int, height: int, device: str, tile: int | None, repeats: int) -> dict:
    import numpy as np
    import torch

    from cldyn_cli.fusion import Fuser, fuse_images
    from cldyn_cli.models.loading import load_vfn

    rng = np.random.default_rng(0)
    ir = rng.random((height, width), dtype=np.float32)
    vis = rng.random((height, width, 3), dtype=np.float32)
    model, _ = load_vfn()
    fuser = Fuser(model, torch.device(device), tile)
    fuse_images(fuser, ir[:64, :64], vis[:64, :64])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuse_images(fuser, ir, vis)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    best = min(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"size": f"{width}x{height}", "seconds": best, "s_per_mp": best / (width * height / 1e6),
            "peak_rss_mb": peak_mb, "peak_gpu_mb": gpu_mb, "tiled": fuser._tile_for(height, width)}


def run_compensated(width: int, height: int, device: str, repeats: int, strides: list[int]) -> dict:
    """Seconds per megapixel of base fusion and of compensated fusion at each query stride.

    The task network's features are computed once beforehand and handed back by a stand-in, so
    the compensated time counts both fusion passes and the compensation, not the task network
    (whose own time is reported beside). The calls alternate, so that other load disturbs all alike.
    """
    import torch

    from cldyn_cli.colour import luminance
    from cldyn_cli.fusion import Fuser, compensated_inference_y, task_rgb
    from cldyn_cli.models.inference import inference_vfn
    from cldyn_cli.models.loading import load_vfn
    from cldyn_cli.models.rsc import A2SI, SemanticCompensation
    from cldyn_cli.plugins import get_task
    from cldyn_cli.tasks import TaskOptions

    dev = torch.device(device)
    base, _ = load_vfn(device=dev)
    inference_base = inference_vfn(base).to(memory_format=torch.channels_last)  # as `cldyn fuse --task` runs it
    torch.manual_seed(0)
    compensation = SemanticCompensation().to(dev).eval()
    task = get_task("toyseg").load(TaskOptions(device=dev))
    fuser = Fuser(base, dev)
    ir, vis = torch.rand(1, 1, height, width, device=dev), torch.rand(1, 3, height, width, device=dev)

    class Precomputed:
        """The task network's answer, computed once: its cost stays out of the compensated time."""

        features_of = task.features(task_rgb(base(ir, luminance(vis)), vis)).detach()

        def features(self, rgb: torch.Tensor) -> torch.Tensor:
            return self.features_of

    def compensated(stride: int):
        def run() -> None:
            for block in compensation.modules():
                if isinstance(block, A2SI):
                    block.query_stride = stride
            compensated_inference_y(inference_base, compensation, Precomputed(), ir, vis)
        return run

    fns = {"base": lambda: fuser.fuse_y(ir, vis[:, :1]),
           "task": lambda: task.features(task_rgb(inference_base(ir, luminance(vis)), vis))}
    fns.update({f"comp{s}": compensated(s) for s in strides})
    best = {name: float("inf") for name in fns}
    with torch.no_grad():
        for round_ in range(repeats + 1):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if round_:
                    best[name] = min(best[name], time.perf_counter() - start)
    mp = width * height / 1e6
    return {"size": f"{width}x{height}", "base_s_per_mp": best["base"] / mp,
            "task_s_per_mp": best["task"] / mp - best["base"] / mp,
            "compensated": {s: {"s_per_mp": best[f"comp{s}"] / mp, "ratio": best[f"comp{s}"] / best["base"]}
                            for s in strides}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="640x480,1920x1080,4000x3000")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compensated", action="store_true", help="time compensated over base fusion")
    parser.add_argument("--query-strides", default="1", help="with --compensated: A2SI query strides to time")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compensated:
        strides = [int(s) for s in args.query_strides.split(",")]
        print(f"{'size':>10} {'base s/MP':>10} {'task s/MP':>10} {'stride':>6} {'comp s/MP':>10} {'ratio':>6}")
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            r = run_compensated(w, h, args.device, args.repeats, strides)
            for stride, c in r["compensated"].items():
                print(f"{r['size']:>10} {r['base_s_per_mp']:10.2f} {r['task_s_per_mp']:10.2f} {stride:6d} "
                      f"{c['s_per_mp']:10.2f} {c['ratio']:6.2f}")
        return
    if args.one:
        w, h = map(int, args.one.split("x"))
        print(json.dumps(run_one(w, h, args.device, args.tile, args.repeats)))
        return
    print(f"{'size':>10} {'tiled':>6} {'seconds':>8} {'s/MP':>7} {'peak RSS MB':>12} {'peak GPU MB':>12}")
    for size in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--one", size, "--device", args.device, "--repeats", str(args.repeats)]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        gpu = "-" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}"
        print(f"{r['size']:>10} {str(r['tiled']):>6} {r['seconds']:8.2f} {r['s_per_mp']:7.2f} {r['peak_rss_mb']:12.0f} "
              f"{gpu:>12}")


if __name__ == "__main__":
    main()
