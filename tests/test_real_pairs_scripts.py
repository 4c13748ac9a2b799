"""Smoke tests of the real-imagery scripts (the long runs themselves stay outside CI): the benchmark
table, RoadScene's held-out split and the image strip, on small generated pairs."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from imagefiles import save_gray, save_rgb

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_benchmark_table_has_every_method_the_published_row_and_a_win_count(pair_dirs, tmp_path: Path) -> None:
    ir, vis = pair_dirs
    result = run("benchmarks/real_pairs.py", "--set", f"TNO={ir},{vis}", "--work", str(tmp_path / "w"),
                 "--output", str(tmp_path / "t.md"), "--threads", "1")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "t.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| TNO |")]
    assert [r.split("|")[2].strip() for r in rows] == ["cldyn default", "cldyn default, --no-stretch",
                                                      "average (IR+Y)/2", "pixel-wise max",
                                                      "gradient-domain (Poisson)",
                                                      "gradient-domain, stretched (clip 0.001)",
                                                      "CDDFuse (published, CVPR 2023)"]  # shipped model stretches
    assert rows[-1].split("|")[3].strip() == "7.12"  # the cited constant, not a measurement
    assert rows[1].split("|")[-2].strip() != "-" and rows[2].split("|")[-2].strip() == "-"  # only networks timed
    assert "cldyn default is at or above CDDFuse's published value on" in table
    pixel_max_qabf = rows[3].split("|")[9].strip()
    assert len(pixel_max_qabf.split(".")[1]) == 3  # measurements keep three decimals
    assert f"Qabf of cldyn default against the pixel-wise max: TNO {rows[0].split('|')[9].strip()} vs {pixel_max_qabf}." \
        in table
    assert len(list((tmp_path / "w" / "TNO" / "pixel-wise_max").glob("*.png"))) == 3


def test_roadscene_split_leaves_out_the_benchmark_pairs(tmp_path: Path) -> None:
    held_out = (ROOT / "examples" / "roadscene_benchmark_names.txt").read_text().split()
    assert len(held_out) == 50
    rng = np.random.default_rng(0)
    for stem in [held_out[0], "FLIR_99998", "FLIR_99999"]:
        save_gray(tmp_path / "rs" / "cropinfrared" / f"{stem}.jpg", rng.random((8, 8)))
        save_rgb(tmp_path / "rs" / "crop_LR_visible" / f"{stem}.jpg", rng.random((8, 8, 3)))
    result = run("examples/roadscene_split.py", str(tmp_path / "rs"), str(tmp_path / "split"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "split" / "ir").iterdir()) == ["FLIR_99998.jpg", "FLIR_99999.jpg"]
    assert sorted(p.name for p in (tmp_path / "split" / "vis").iterdir()) == ["FLIR_99998.jpg", "FLIR_99999.jpg"]
    wrong = run("examples/roadscene_split.py", str(tmp_path), str(tmp_path / "x"))
    assert wrong.returncode != 0 and "has no cropinfrared/" in wrong.stderr


def test_image_strip_has_one_row_per_pair_and_three_tiles(pair_dirs, tmp_path: Path) -> None:
    from PIL import Image

    ir, vis = pair_dirs
    result = run("examples/image_strip.py", "-o", str(tmp_path / "s.png"), "--ir", str(ir), "--vis", str(vis),
                 "--n", "2", "--height", "40")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "s.png") as strip:
        assert strip.size == (3 * round(64 * 40 / 48) + 2 * 4, 2 * 40 + 4)  # two rows of 64-wide, 48/56-high pairs
