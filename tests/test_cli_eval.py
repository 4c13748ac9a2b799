"""`cldyn eval` from the command line: outputs, method comparison, report, and one-line errors."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cldyn_cli.cli.eval import register
from cldyn_cli.metrics import METRIC_NAMES, compute_all
from cldyn_cli.metrics.evaluate import luminance8
from cldyn_cli.metrics.testcard import make_triple

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Test harness."""


register(app)
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["eval", *args, "--quiet", "--workers", "1"])


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    """ir/, vis/ (RGB for one scene), and two fused folders for three scenes of 64x48."""
    arrays = {}
    for i in range(3):
        a, b, f = make_triple(48, 64, i)
        name = f"s{i}"
        Image.fromarray(a).save((tmp_path / "ir").mkdir(exist_ok=True) or tmp_path / "ir" / f"{name}.png")
        if i == 1:  # colour visible image: evaluated as its luminance
            rgb = np.stack([b, np.roll(b, 3, axis=1), b // 2], axis=-1)
            Image.fromarray(rgb).save((tmp_path / "vis").mkdir(exist_ok=True) or tmp_path / "vis" / f"{name}.png")
            b = luminance8(rgb / 255.0)
        else:
            Image.fromarray(b).save((tmp_path / "vis").mkdir(exist_ok=True) or tmp_path / "vis" / f"{name}.png")
        Image.fromarray(f).save((tmp_path / "m1").mkdir(exist_ok=True) or tmp_path / "m1" / f"{name}.png")
        g = np.maximum(a, b)
        Image.fromarray(g).save((tmp_path / "m2").mkdir(exist_ok=True) or tmp_path / "m2" / f"{name}.png")
        arrays[name] = (a, b, f, g)
    return {"root": tmp_path, "arrays": arrays}


def paths(ds: dict, *names: str) -> list[str]:
    return [str(ds["root"] / n) for n in names]


def test_luminance_rounding() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [128, 128, 128], [255, 255, 0], [0, 0, 0]]]) / 255.0
    # red 76.245 -> 76, green 149.685 -> 150, grey stays grey, yellow 225.93 -> 226
    assert luminance8(rgb.astype(np.float32)).tolist() == [[76, 150, 128, 226, 0]]
    # exact halves round up: 114 * 250 / 1000 = 28.5 -> 29, (587 * 12 + 114 * 4) / 1000 = 7.5 -> 8
    halves = (np.array([[[0, 0, 250], [0, 12, 4]]]) / 255.0).astype(np.float32)
    assert luminance8(halves).tolist() == [[29, 8]]
    deep = np.array([[[0.6, 0.6, 0.6]]])  # not 8-bit codes (16-bit file): float path, 153.0 -> 153
    assert luminance8(deep).tolist() == [[153]]


def test_json_csv_and_table(dataset: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(*paths(dataset, "ir", "vis", "m1"), "--json", str(out / "r.json"), "--csv", str(out / "r.csv"))
    assert result.exit_code == 0, result.output
    assert "Qcv" in result.stdout and "↓" in result.stdout and "↑" in result.stdout
    doc = json.loads((out / "r.json").read_text())
    assert set(doc) == {"images", "mean", "conventions"}
    assert sorted(doc["images"]) == ["s0", "s1", "s2"]
    assert list(doc["mean"]) == list(METRIC_NAMES)
    assert doc["conventions"]["convention"] == "vifb"
    assert set(doc["conventions"]["metrics"]) == set(METRIC_NAMES)
    for name, (a, b, f, _) in dataset["arrays"].items():
        want = compute_all(a, b, f)
        for metric, value in doc["images"][name].items():
            assert value == pytest.approx(want[metric], rel=1e-12), (name, metric)
    en = [doc["images"][n]["EN"] for n in ("s0", "s1", "s2")]
    assert doc["mean"]["EN"] == pytest.approx(sum(en) / 3, rel=1e-12)
    rows = list(csv.reader((out / "r.csv").open()))
    assert rows[0] == ["method", "image", *METRIC_NAMES]
    assert [r[:2] for r in rows[1:]] == [["m1", "s0"], ["m1", "s1"], ["m1", "s2"]]
    assert float(rows[1][2]) == doc["images"]["s0"]["EN"]


def test_metric_choice_convention_and_undefined_values(dataset: dict, tmp_path: Path) -> None:
    root = dataset["root"]
    (root / "same").mkdir()
    for name in ("s0", "s1", "s2"):  # fused = infrared: SCD is undefined (null in JSON, n/a in the table)
        (root / "same" / f"{name}.png").write_bytes((root / "ir" / f"{name}.png").read_bytes())
    out = tmp_path / "r.json"
    result = run(*paths(dataset, "ir", "vis", "same"), "--metrics", "sf,SCD", "--convention", "cddfuse",
                 "--json", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert list(doc["mean"]) == ["SF", "SCD"] and doc["mean"]["SCD"] is None
    assert doc["images"]["s0"]["SCD"] is None
    assert doc["conventions"]["convention"] == "cddfuse"
    a, b, _, _ = dataset["arrays"]["s0"]
    assert doc["images"]["s0"]["SF"] == pytest.approx(compute_all(a, b, a, "cddfuse", ["SF"])["SF"], rel=1e-12)
    assert "n/a" in result.stdout


def test_comparing_methods_and_the_report(dataset: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(*paths(dataset, "ir", "vis", "m1"), "--fused", str(dataset["root"] / "m2"),
                 "--json", str(out / "r.json"), "--report", str(out / "report"), "--metrics", "EN,Qabf,Qcv")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "r.json").read_text())
    assert set(doc) == {"methods", "conventions"} and list(doc["methods"]) == ["m1", "m2"]
    assert set(doc["methods"]["m2"]) == {"images", "mean"}
    page = (out / "report" / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/jpeg;base64,") == 3 * 4  # per scene: IR, VIS, two fused
    assert "src=\"http" not in page and "<script" not in page  # self-contained
    assert 'class="best"' in page or "class=best" in page
    for word in ("m1", "m2", "s0", "s2", "Qcv", "&darr;"):
        assert word in page


def test_single_files_and_parallel_workers(dataset: dict, tmp_path: Path) -> None:
    root = dataset["root"]
    result = run(str(root / "ir" / "s2.png"), str(root / "vis" / "s2.png"), str(root / "m1" / "s2.png"),
                 "--json", str(tmp_path / "one.json"), "--metrics", "MI")
    assert result.exit_code == 0, result.output
    a, b, f, _ = dataset["arrays"]["s2"]
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["images"]["s2"]["MI"] == pytest.approx(compute_all(a, b, f, metrics=["MI"])["MI"], rel=1e-12)
    par = runner.invoke(app, ["eval", *paths(dataset, "ir", "vis", "m1"), "--quiet", "--workers", "2",
                              "--json", str(tmp_path / "par.json"), "--metrics", "EN,VIF"])
    assert par.exit_code == 0, par.output
    seq = run(*paths(dataset, "ir", "vis", "m1"), "--json", str(tmp_path / "seq.json"), "--metrics", "EN,VIF")
    assert seq.exit_code == 0
    assert json.loads((tmp_path / "par.json").read_text()) == json.loads((tmp_path / "seq.json").read_text())


def _fails_cleanly(result, out: Path, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_fused_size_mismatch(dataset: dict, tmp_path: Path) -> None:
    root = dataset["root"]
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(root / "m1" / "s1.png")
    out = tmp_path / "out"
    result = run(*paths(dataset, "ir", "vis", "m1"), "--json", str(out / "r.json"), "--report", str(out / "rep"))
    _fails_cleanly(result, out, "s1.png", "64x40", "64x48")


def test_missing_fused_file(dataset: dict, tmp_path: Path) -> None:
    (dataset["root"] / "m2" / "s0.png").unlink()
    out = tmp_path / "out"
    result = run(*paths(dataset, "ir", "vis", "m1", "m2"), "--csv", str(out / "r.csv"))
    _fails_cleanly(result, out, "missing", "s0")


def test_unreadable_image(dataset: dict, tmp_path: Path) -> None:
    (dataset["root"] / "m1" / "s2.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    result = run(*paths(dataset, "ir", "vis", "m1"), "--json", str(out / "r.json"))
    _fails_cleanly(result, out, "s2.png")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_truncated_image_fails_during_evaluation(dataset: dict, tmp_path: Path, workers: str) -> None:
    path = dataset["root"] / "m1" / "s2.png"
    path.write_bytes(path.read_bytes()[:200])  # the header reads, the pixels do not
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", *paths(dataset, "ir", "vis", "m1"), "--quiet", "--workers", workers,
                                 "--json", str(out / "r.json"), "--report", str(out / "rep")])
    _fails_cleanly(result, out, "s2.png")


@pytest.mark.parametrize("args, words", [
    (["--metrics", "EN,FMI"], ["FMI", "EN,SD"]),
    (["--convention", "matlab"], ["vifb", "cddfuse"]),
])
def test_bad_options(dataset: dict, tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = run(*paths(dataset, "ir", "vis", "m1"), *args)
    _fails_cleanly(result, tmp_path / "none", *words)


def test_no_fused_input(dataset: dict, tmp_path: Path) -> None:
    _fails_cleanly(run(*paths(dataset, "ir", "vis")), tmp_path / "none", "fused")


def test_nan_free_json_is_strict(dataset: dict, tmp_path: Path) -> None:
    result = run(*paths(dataset, "ir", "vis", "ir"), "--json", str(tmp_path / "r.json"), "--metrics", "PSNR,SCD")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert all(v["SCD"] is None for v in doc["images"].values())
    assert all(v["PSNR"] is not None and math.isfinite(v["PSNR"]) for v in doc["images"].values())
