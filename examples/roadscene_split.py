"""Make RoadScene's training split: the aligned pairs that are not among its 50 benchmark pairs.

RoadScene (github.com/hanna-xu/RoadScene) holds 221 aligned FLIR pairs in ``cropinfrared/`` and
``crop_LR_visible/``. The 50 pairs that fusion papers test on (CDDFuse's ``test_img/RoadScene``) are
listed by name in ``roadscene_benchmark_names.txt`` beside this script; they are left out so that
the benchmark stays held out. The split is a folder of symbolic links (``ir/``, ``vis/``), which
``cldyn train-base`` reads as it is.

Usage: python examples/roadscene_split.py ROADSCENE_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARK = Path(__file__).with_name("roadscene_benchmark_names.txt")


def split(roadscene: Path, out: Path) -> int:
    """Link every non-benchmark pair into ``out/ir`` and ``out/vis``; returns the number of pairs."""
    held_out = set(BENCHMARK.read_text().split())
    ir_dir, vis_dir = roadscene / "cropinfrared", roadscene / "crop_LR_visible"
    if not (ir_dir.is_dir() and vis_dir.is_dir()):
        sys.exit(f"error: {roadscene} has no cropinfrared/ and crop_LR_visible/; give a RoadScene checkout")
    visible = {p.stem: p for p in vis_dir.iterdir()}
    (out / "ir").mkdir(parents=True, exist_ok=True)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    count = 0
    for ir in sorted(ir_dir.iterdir()):
        if ir.stem in held_out or ir.stem not in visible:
            continue
        for src, folder in ((ir, "ir"), (visible[ir.stem], "vis")):
            link = out / folder / src.name
            if not link.is_symlink():
                link.symlink_to(src.resolve())
        count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    print(f"{split(Path(sys.argv[1]), Path(sys.argv[2]))} training pairs in {sys.argv[2]}")
