"""Does the shipped base model keep more detail than averaging the two images?

Makes held-out synthetic scenes (a seed the model never saw), fuses them with the shipped model,
writes the plain average (IR + visible Y) / 2 with the visible colour, and compares both with
`cldyn eval`. Run: python examples/base_vs_average.py [--out DIR] [--n N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.data.images import read_image, read_infrared, write_png
from cldyn_cli.data.pairs import find_pairs
from cldyn_cli.fusion import to_array, to_tensor


def cldyn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cldyn_cli", *args], check=True)


def write_average(ir_dir: Path, vis_dir: Path, out: Path) -> None:
    for pair in find_pairs(ir_dir, vis_dir):
        vis = to_tensor(read_image(pair.vis))
        average = (to_tensor(read_infrared(pair.ir)) + luminance(vis)) / 2
        write_png(to_array(recombine(average, vis)), out / f"{pair.name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/base-vs-average"))
    parser.add_argument("--n", type=int, default=12)
    args = parser.parse_args()
    scenes = args.out / "scenes"
    cldyn("synth", str(scenes), "--n", str(args.n), "--size", "640x480", "--seed", "4242", "--quiet")
    cldyn("fuse", str(scenes / "ir"), str(scenes / "vis"), "-o", str(args.out / "cldyn-base"), "--overwrite",
          "--quiet")
    with torch.no_grad():
        write_average(scenes / "ir", scenes / "vis", args.out / "average")
    cldyn("eval", str(scenes / "ir"), str(scenes / "vis"), str(args.out / "cldyn-base"), str(args.out / "average"),
          "--json", str(args.out / "metrics.json"), "--report", str(args.out / "report"), "--quiet")


if __name__ == "__main__":
    main()
