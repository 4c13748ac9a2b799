"""Fusion quality and speed on real infrared-visible benchmark pairs, as one Markdown table.

Each set (``--set NAME=IR_DIR,VIS_DIR``) is fused with the shipped base model and with every
``--base`` checkpoint, and with three training-free baselines: the plain average (IR + Y) / 2, the
pixel-wise maximum max(IR, Y), and gradient-domain fusion (the image whose pixel differences best
match those of the locally sharper source, a Poisson equation), the last also with the shipped
model's output stretch. All are scored with ``cldyn eval --convention cddfuse`` (the
convention of CDDFuse's published tables), and CDDFuse's published numbers for the TNO and RoadScene
test sets are added as a cited row. Fusion time per image is the network call alone (no file I/O).

Usage:
  python benchmarks/real_pairs.py --set TNO=test_img/TNO/ir,test_img/TNO/vi \
      --set RoadScene=test_img/RoadScene/ir,test_img/RoadScene/vi [--base other.safetensors ...] \
      [--work build/real-pairs] [--output table.md] [--threads 2] [--device cpu|cuda]

The benchmark images are not part of cldyn: CDDFuse's repository publishes both test sets
(``test_img/TNO``, ``test_img/RoadScene``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.data.images import read_image, read_infrared, write_png
from cldyn_cli.data.pairs import find_pairs
from cldyn_cli.fusion import Fuser, to_array, to_tensor
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.models.prior import gradient_domain
from cldyn_cli.models.vfn import stretch_range, with_stretch

METRICS = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]
# Zhao et al., "CDDFuse: Correlation-Driven Dual-Branch Feature Decomposition for Multi-Modality Image
# Fusion", CVPR 2023, Table 1 (TNO and RoadScene test sets), in the order of METRICS.
CDDFUSE_PUBLISHED = {
    "TNO": [7.12, 46.00, 13.15, 2.19, 1.76, 0.77, 0.54, 1.03],
    "RoadScene": [7.44, 54.67, 16.36, 2.30, 1.81, 0.69, 0.52, 0.98],
}
CDDFUSE_ROW = "CDDFuse (published, CVPR 2023)"


def parse_set(text: str) -> tuple[str, Path, Path]:
    name, sep, dirs = text.partition("=")
    ir, comma, vis = dirs.partition(",")
    if not (sep and comma and name and ir and vis):
        raise argparse.ArgumentTypeError(f"--set {text!r}: write NAME=IR_DIR,VIS_DIR")
    return name, Path(ir), Path(vis)


def fuse_set(pairs, fuse_y, out: Path) -> float:
    """Fuse every pair with ``fuse_y(ir, vis_y) -> y`` into ``out``; returns seconds per image in ``fuse_y``."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for pair in pairs:
        ir, vis = to_tensor(read_infrared(pair.ir)), to_tensor(read_image(pair.vis))
        vis_y = luminance(vis)
        start = time.perf_counter()
        fused_y = fuse_y(ir, vis_y)
        seconds += time.perf_counter() - start
        write_png(to_array(recombine(fused_y, vis)), out / Path(pair.name).with_suffix(".png"))
    return seconds / len(pairs)


def score(ir: Path, vis: Path, fused: Path, json_path: Path) -> dict[str, float]:
    """Means of METRICS for one fused folder, computed by the `cldyn eval` command."""
    subprocess.run([sys.executable, "-m", "cldyn_cli", "eval", str(ir), str(vis), str(fused), "--convention",
                    "cddfuse", "--metrics", ",".join(METRICS), "--json", str(json_path), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_path.read_text())["mean"]


def methods(bases: list[Path], device: torch.device) -> list[tuple[str, Callable, bool]]:
    """(name, fuse_y, is_network) for the shipped model, each --base, and the training-free baselines.

    A network whose output is stretched also appears unstretched, to show what the stretch adds.
    """
    out = []
    networks = [("cldyn default", load_vfn(None)[0])] + [(p.stem, load_vfn(p)[0]) for p in bases]
    for label, model in networks:
        out.append((label, Fuser(model, device).fuse_y, True))
        if model.config.stretch:
            out.append((f"{label}, --no-stretch", Fuser(with_stretch(model, False), device).fuse_y, True))
    out.append(("average (IR+Y)/2", lambda ir, y: (ir + y) / 2, False))
    out.append(("pixel-wise max", torch.maximum, False))
    shipped_clip = networks[0][1].config.stretch_clip
    out.append(("gradient-domain (Poisson)", gradient_domain, False))
    out.append((f"gradient-domain, stretched (clip {shipped_clip:g})",
                lambda ir, y: stretch_range(gradient_domain(ir, y), shipped_clip), False))
    return out


def markdown(rows: list[tuple[str, str, list[float], str]]) -> str:
    """The table; measurements with three decimals (close calls such as Qabf against the pixel-wise
    maximum show), the published row with the paper's two."""
    head = "| set | method | " + " | ".join(METRICS) + " | s/image |\n"
    head += "|---|---|" + "---|" * (len(METRICS) + 1) + "\n"
    body = "".join(f"| {s} | {m} | " + " | ".join(f"{v:.{2 if m == CDDFUSE_ROW else 3}f}" for v in vals)
                   + f" | {t} |\n" for s, m, vals, t in rows)
    return head + body


def wins(rows, method: str) -> str:
    """How many of the published CDDFuse numbers ``method`` matches or beats, per set and in all."""
    total, count, notes = 0, 0, []
    for set_name, published in CDDFUSE_PUBLISHED.items():
        ours = next((v for s, m, v, _ in rows if s == set_name and m == method), None)
        if ours is None:
            continue
        hits = [name for name, a, b in zip(METRICS, ours, published) if round(a, 2) >= b]
        total, count = total + len(METRICS), count + len(hits)
        notes.append(f"{set_name}: {', '.join(hits) or 'none'}")
    return f"{method} is at or above CDDFuse's published value on {count} of {total} ({'; '.join(notes)})."


def against_pixel_max(rows, method: str, metric: str = "Qabf") -> str:
    """``method``'s ``metric`` beside the pixel-wise maximum's on every set."""
    value = {(s, m): v[METRICS.index(metric)] for s, m, v, _ in rows}
    notes = [f"{s} {value[s, method]:.3f} vs {value[s, 'pixel-wise max']:.3f}"
             for s in dict.fromkeys(s for s, _, _, _ in rows) if (s, method) in value and (s, "pixel-wise max") in value]
    return f"{metric} of {method} against the pixel-wise max: {'; '.join(notes)}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sets", type=parse_set, action="append", required=True,
                        help="NAME=IR_DIR,VIS_DIR (repeatable); NAME TNO or RoadScene adds CDDFuse's published row")
    parser.add_argument("--base", type=Path, action="append", default=[], help="another base checkpoint to compare")
    parser.add_argument("--work", type=Path, default=Path("build/real-pairs"), help="fused images and eval JSON")
    parser.add_argument("--output", type=Path, help="write the Markdown table here too")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for fusion")
    parser.add_argument("--device", default="cpu", help="where the networks run (cpu, cuda, cuda:N)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fusers = methods(args.base, torch.device(args.device))
    rows = []
    for set_name, ir_dir, vis_dir in args.sets:
        pairs = find_pairs(ir_dir, vis_dir)
        for label, fuse_y, is_network in fusers:
            out = args.work / set_name / re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_")
            shutil.rmtree(out, ignore_errors=True)
            seconds = fuse_set(pairs, fuse_y, out)
            means = score(ir_dir, vis_dir, out, out.with_suffix(".json"))
            rows.append((set_name, label, [means[m] for m in METRICS], f"{seconds:.3f}" if is_network else "-"))
            print(f"{set_name} / {label}: " + ", ".join(f"{m} {means[m]:.3f}" for m in METRICS), file=sys.stderr)
        if set_name in CDDFUSE_PUBLISHED:
            rows.append((set_name, CDDFUSE_ROW, CDDFUSE_PUBLISHED[set_name], "-"))
    text = markdown(rows) + "\n" + wins(rows, "cldyn default") + "\n" + against_pixel_max(rows, "cldyn default") + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
