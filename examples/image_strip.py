"""An image strip, one row per pair: infrared | visible | fused with the shipped model.

Without folders it makes held-out synthetic scenes (so the strip can be shared freely); with
``--ir`` and ``--vis`` it uses your own pairs (the first ``--n`` of them by name).
Run: python examples/image_strip.py -o strip.png [--ir IR_DIR --vis VIS_DIR] [--n 3] [--height 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cldyn_cli.data.images import read_image, read_infrared, to_uint8
from cldyn_cli.data.pairs import find_pairs
from cldyn_cli.data.synth import write_dataset
from cldyn_cli.fusion import Fuser, fuse_images
from cldyn_cli.models.loading import load_vfn

GAP = 4  # white pixels between the tiles


def as_rgb(img: np.ndarray) -> Image.Image:
    arr = to_uint8(img)
    return Image.fromarray(np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr)


def strip(rows: list[list[Image.Image]], height: int) -> Image.Image:
    """Tiles scaled to ``height``, side by side, rows stacked."""
    scaled = [[t.resize((round(t.width * height / t.height), height), Image.Resampling.LANCZOS) for t in row]
              for row in rows]
    width = max(sum(t.width for t in row) + GAP * (len(row) - 1) for row in scaled)
    out = Image.new("RGB", (width, len(scaled) * height + GAP * (len(scaled) - 1)), "white")
    for r, row in enumerate(scaled):
        x = 0
        for tile in row:
            out.paste(tile, (x, r * (height + GAP)))
            x += tile.width + GAP
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--ir", type=Path, help="infrared folder (default: synthetic scenes)")
    parser.add_argument("--vis", type=Path, help="visible folder matching --ir by name")
    parser.add_argument("--n", type=int, default=3, help="rows")
    parser.add_argument("--height", type=int, default=200, help="height of each tile in pixels")
    args = parser.parse_args()
    if (args.ir is None) != (args.vis is None):
        parser.error("--ir and --vis go together")
    fuser = Fuser(load_vfn()[0], torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.ir is None:
            write_dataset(Path(tmp), args.n, 480, 360, seed=4242, layout="pairs")
            args.ir, args.vis = Path(tmp) / "ir", Path(tmp) / "vis"
        rows = []
        for pair in find_pairs(args.ir, args.vis)[:args.n]:
            ir, vis = read_infrared(pair.ir), read_image(pair.vis)
            rows.append([as_rgb(ir), as_rgb(vis), as_rgb(fuse_images(fuser, ir, vis))])
    strip(rows, args.height).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
