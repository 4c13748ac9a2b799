"""Fuse time per megapixel and peak memory of the base model, up to a 4000x3000 pair, and the
cost of compensated fusion relative to base fusion.

Each size runs in its own process so that the peak resident memory (ru_maxrss) is that size's.
Usage: python benchmarks/bench_fuse.py [--device cpu|cuda] [--sizes 640x480,1920x1080,4000x3000]
       python benchmarks/bench_fuse.py --compensated [--sizes 640x480]
The compensated run uses the default compensation of docs/method.md (K=1, E=256, M=4) conditioned on the
built-in toyseg task network; the task network's own forward pass is included in its time.
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


def run_compensated(width: int, height: int, device: str, repeats: int) -> dict:
    import torch

    from cldyn_cli.fusion import Fuser, compensated_y
    from cldyn_cli.models.loading import load_vfn
    from cldyn_cli.models.rsc import SemanticCompensation
    from cldyn_cli.plugins import get_task
    from cldyn_cli.tasks import TaskOptions

    dev = torch.device(device)
    base, _ = load_vfn(device=dev)
    compensation = SemanticCompensation().to(dev).eval()
    task = get_task("toyseg").load(TaskOptions(device=dev))
    fuser = Fuser(base, dev)
    ir, vis = torch.rand(1, 1, height, width, device=dev), torch.rand(1, 3, height, width, device=dev)

    def timed(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    with torch.no_grad():
        t_base = timed(lambda: fuser.fuse_y(ir, vis[:, :1]))
        t_comp = timed(lambda: compensated_y(base, compensation, task, ir, vis))
    mp = width * height / 1e6
    return {"size": f"{width}x{height}", "base_s_per_mp": t_base / mp, "comp_s_per_mp": t_comp / mp,
            "ratio": t_comp / t_base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="640x480,1920x1080,4000x3000")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compensated", action="store_true", help="time compensated over base fusion")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compensated:
        print(f"{'size':>10} {'base s/MP':>10} {'comp s/MP':>10} {'ratio':>6}")
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            r = run_compensated(w, h, args.device, args.repeats)
            print(f"{r['size']:>10} {r['base_s_per_mp']:10.2f} {r['comp_s_per_mp']:10.2f} {r['ratio']:6.2f}")
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
