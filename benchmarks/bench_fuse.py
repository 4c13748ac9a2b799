"""Fuse time per megapixel and peak memory of the base model, up to a 4000x3000 pair.

Each size runs in its own process so that the peak resident memory (ru_maxrss) is that size's.
Usage: python benchmarks/bench_fuse.py [--device cpu|cuda] [--sizes 640x480,1920x1080,4000x3000]
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
    return {"size": f"{width}x{height}", "seconds": best, "s_per_mp": best / (width * height / 1e6),
            "peak_rss_mb": peak_mb, "tiled": fuser._tile_for(height, width)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="640x480,1920x1080,4000x3000")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        w, h = map(int, args.one.split("x"))
        print(json.dumps(run_one(w, h, args.device, args.tile, args.repeats)))
        return
    print(f"{'size':>10} {'tiled':>6} {'seconds':>8} {'s/MP':>7} {'peak RSS MB':>12}")
    for size in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--one", size, "--device", args.device, "--repeats", str(args.repeats)]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{r['size']:>10} {str(r['tiled']):>6} {r['seconds']:8.2f} {r['s_per_mp']:7.2f} {r['peak_rss_mb']:12.0f}")


if __name__ == "__main__":
    main()
