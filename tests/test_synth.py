"""Synthetic scenes: determinism, labels that agree with the pixels, layouts on disk, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cldyn_cli.cli.synth import register
from cldyn_cli.data.synth import CLASSES, CONDITIONS, DET_CLASSES, Scene, SceneOptions, make_scene, write_dataset
from cldyn_cli.errors import UserError

SIZES = [(32, 32), (37, 53), (96, 64), (160, 120)]


def scenes(seed: int = 11, count: int = 12):
    for w, h in SIZES:
        for i in range(count):
            yield w, h, make_scene(np.random.default_rng([seed, i]), w, h)


def box_px(box, w: int, h: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel edges (exclusive end) of a normalised YOLO box."""
    _, cx, cy, bw, bh = box
    return (round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w), round((cy + bh / 2) * h))


def test_class_lists_match_m3fd():
    assert CLASSES[0] == "background"
    assert DET_CLASSES == ("People", "Car", "Bus", "Motorcycle", "Lamp", "Truck")
    assert len(CLASSES) == len(DET_CLASSES) + 1
    assert CLASSES[1] == "person" and CLASSES[2] == "car"


def test_same_rng_same_scene_and_other_seed_differs():
    a = make_scene(np.random.default_rng([3, 1]), 96, 64)
    b = make_scene(np.random.default_rng([3, 1]), 96, 64)
    c = make_scene(np.random.default_rng([4, 1]), 96, 64)
    for name in ("ir", "vis", "mask", "saliency"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.boxes == b.boxes and a.condition == b.condition
    assert not np.array_equal(a.ir, c.ir) and not np.array_equal(a.vis, c.vis)


def test_types_shapes_and_ranges():
    seen_conditions, seen_classes = set(), set()
    for w, h, s in scenes():
        assert isinstance(s, Scene)
        assert s.ir.shape == (h, w) and s.ir.dtype == np.float32
        assert s.vis.shape == (h, w, 3) and s.vis.dtype == np.float32
        assert s.mask.shape == (h, w) and s.mask.dtype == np.uint8
        assert s.saliency.shape == (h, w) and s.saliency.dtype == np.uint8
        for img in (s.ir, s.vis):
            assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
        assert s.mask.max() < len(CLASSES)
        assert set(np.unique(s.saliency)) <= {0, 255}
        assert np.array_equal(s.saliency == 255, s.mask > 0)  # the salient objects are the labelled ones
        assert 1 <= len(s.boxes) <= 6
        assert s.condition in CONDITIONS
        seen_conditions.add(s.condition)
        seen_classes.update(int(b[0]) for b in s.boxes)
    assert seen_conditions == set(CONDITIONS)
    assert {0, 1} <= seen_classes  # people and cars


def test_boxes_are_normalised_and_agree_with_the_mask():
    for w, h, s in scenes():
        covered = np.zeros((h, w), bool)
        for box in s.boxes:
            cls, cx, cy, bw, bh = box
            assert isinstance(cls, int) and 0 <= cls < len(DET_CLASSES)
            assert all(isinstance(v, float) for v in (cx, cy, bw, bh))
            assert 0 < bw <= 1 and 0 < bh <= 1
            assert 0 <= cx - bw / 2 and cx + bw / 2 <= 1 and 0 <= cy - bh / 2 and cy + bh / 2 <= 1
            x0, y0, x1, y1 = box_px(box, w, h)
            inside = s.mask[y0:y1, x0:x1] == cls + 1
            assert inside.any()
            # tight: every edge row/column of the box touches the object
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
        assert np.array_equal(covered, s.mask > 0)  # every object pixel lies in a box of its class


def test_objects_are_warmer_than_their_surroundings_in_ir():
    checked = 0
    for w, h, s in scenes(seed=5, count=8):
        for box in s.boxes:
            x0, y0, x1, y1 = box_px(box, w, h)
            obj = s.mask[y0:y1, x0:x1] == box[0] + 1
            if obj.sum() < 6:
                continue
            px, py = max(2, (x1 - x0) // 2), max(2, (y1 - y0) // 2)
            ring = np.zeros((h, w), bool)
            ring[max(0, y0 - py):y1 + py, max(0, x0 - px):x1 + px] = True
            ring[y0:y1, x0:x1] = False
            ring &= s.mask == 0
            if ring.sum() < 6:
                continue
            assert s.ir[y0:y1, x0:x1][obj].mean() > np.median(s.ir[ring]) + 0.02
            checked += 1
    assert checked > 20


def test_visible_has_detail_that_infrared_lacks():
    """Texture and markings live in the visible image: its background is far busier than IR's."""
    vis_grad = ir_grad = 0.0
    for _, _, s in scenes(seed=2, count=4):
        bg = (s.mask == 0)[:, 1:] & (s.mask == 0)[:, :-1]
        vis_grad += np.abs(np.diff(s.vis.mean(-1), axis=1))[bg].mean()
        ir_grad += np.abs(np.diff(s.ir, axis=1))[bg].mean()
    assert vis_grad > 1.5 * ir_grad


def test_large_scene_is_fast_enough():
    import time

    rng = np.random.default_rng(0)
    make_scene(rng, 640, 480)  # warm-up
    start = time.process_time()  # CPU time: robust on a busy machine
    make_scene(rng, 640, 480)
    assert time.process_time() - start < 0.5  # ~0.07 s of CPU on this machine


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def names(folder: str, idx, suffix: str = ".png") -> set[str]:
    return {f"{folder}/{i:05d}{suffix}" for i in idx}


TRAIN, TEST = [0, 2, 3, 4, 5], [1]  # every fifth scene, starting at 1, is test

EXPECTED = {
    "pairs": (names("ir", range(6)) | names("vis", range(6)) | names("masks", range(6))
              | names("saliency", range(6)) | names("labels", range(6), ".txt")),
    "m3fd": (names("ir/train", TRAIN) | names("ir/test", TEST) | names("vi/train", TRAIN) | names("vi/test", TEST)
             | names("labels/train", TRAIN, ".txt") | names("labels/test", TEST, ".txt")),
    "fmb": set().union(*(names(f"{s}/{k}", idx) for s, idx in (("train", TRAIN), ("test", TEST))
                         for k in ("Infrared", "Visible", "Label"))),
    "vt5000": set().union(*(names(f"{s}/{k}", idx) for s, idx in (("Train", TRAIN), ("Test", TEST))
                            for k in ("RGB", "T", "GT"))),
}


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_layout_writes_exactly_the_expected_tree(tmp_path: Path, layout: str):
    done: list[int] = []
    write_dataset(tmp_path / "ds", 6, 40, 32, seed=1, layout=layout, progress=done.append)
    root = tmp_path / "ds"
    assert tree(root) == EXPECTED[layout]
    assert done == [1, 2, 3, 4, 5, 6]
    modes = {"ir": "L", "vis": "RGB", "masks": "L", "saliency": "L", "vi": "RGB", "Infrared": "L", "Visible": "RGB",
             "Label": "L", "RGB": "RGB", "T": "L", "GT": "L"}
    for rel in EXPECTED[layout]:
        path = root / rel
        if rel.endswith(".txt"):
            for line in path.read_text().splitlines():
                cls, *xywh = line.split()
                assert 0 <= int(cls) < len(DET_CLASSES) and len(xywh) == 4
                assert all(len(v.split(".")[1]) == 6 and 0 <= float(v) <= 1 for v in xywh)
            continue
        with Image.open(path) as im:
            folder = [p for p in Path(rel).parts if p in modes][-1]
            assert im.mode == modes[folder] and im.size == (40, 32)


def test_files_match_the_scene_and_fewer_scenes_are_a_prefix(tmp_path: Path):
    write_dataset(tmp_path / "a", 3, 48, 40, seed=9, layout="pairs")
    write_dataset(tmp_path / "b", 7, 48, 40, seed=9, layout="pairs")
    write_dataset(tmp_path / "c", 3, 48, 40, seed=10, layout="pairs")
    small = tree(tmp_path / "a")
    assert small <= tree(tmp_path / "b")
    for rel in small:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/ir/00000.png").read_bytes() != (tmp_path / "c/ir/00000.png").read_bytes()

    scene = make_scene(np.random.default_rng([9, 2]), 48, 40)
    mask = np.asarray(Image.open(tmp_path / "a/masks/00002.png"))
    ir = np.asarray(Image.open(tmp_path / "a/ir/00002.png")).astype(np.float32) / 255
    assert np.array_equal(mask, scene.mask)
    assert np.abs(ir - scene.ir).max() <= 0.5 / 255 + 1e-6
    lines = (tmp_path / "a/labels/00002.txt").read_text().splitlines()
    assert len(lines) == len(scene.boxes) and int(lines[0].split()[0]) == scene.boxes[0][0]


def test_splits_have_both_parts_from_two_scenes(tmp_path: Path):
    write_dataset(tmp_path, 2, 32, 32, seed=0, layout="m3fd")
    assert tree(tmp_path) == (names("ir/train", [0]) | names("ir/test", [1]) | names("vi/train", [0])
                              | names("vi/test", [1]) | names("labels/train", [0], ".txt")
                              | names("labels/test", [1], ".txt"))


@pytest.mark.parametrize("kwargs, words", [
    (dict(layout="coco"), "layout"),
    (dict(n=0), "at least 1"),
    (dict(width=31), "too small"),
    (dict(height=8), "too small"),
])
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs, words):
    args = dict(out=tmp_path / "ds", n=2, width=32, height=32, seed=0, layout="pairs") | kwargs
    with pytest.raises(UserError, match=words) as info:
        write_dataset(**args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_output_that_is_a_file_is_refused(tmp_path: Path):
    out = tmp_path / "taken"
    out.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_dataset(out, 1, 32, 32, 0, "pairs")


def test_default_options_are_the_natural_mix():
    a = make_scene(np.random.default_rng([3, 1]), 96, 64)
    b = make_scene(np.random.default_rng([3, 1]), 96, 64, SceneOptions())
    assert np.array_equal(a.ir, b.ir) and np.array_equal(a.vis, b.vis) and a.boxes == b.boxes


def test_class_subset_and_minimum_height_shape_the_labels():
    options = SceneOptions(classes=(2,), min_height=0.3)  # cars only, at least 30% of the image high
    heights, plain = [], []
    for i in range(12):
        scene = make_scene(np.random.default_rng([7, i]), 128, 96, options)
        assert scene.boxes and {b[0] for b in scene.boxes} == {DET_CLASSES.index("Car")}
        assert set(np.unique(scene.mask)) <= {0, CLASSES.index("car")}
        heights += [b[4] for b in scene.boxes]
        plain += [b[4] for b in make_scene(np.random.default_rng([7, i]), 128, 96).boxes]
    # Occlusion and the image border can cut a box, so the bound holds for most boxes, not all.
    assert np.median(heights) >= 0.3 and np.median(heights) > 2 * np.median(plain)


@pytest.mark.parametrize("kwargs", [dict(classes=()), dict(classes=(0,)), dict(classes=(7,)), dict(min_height=1.5)])
def test_bad_scene_options_are_user_errors(kwargs):
    with pytest.raises(UserError):
        SceneOptions(**kwargs)


def test_make_scene_refuses_tiny_sizes():
    with pytest.raises(UserError):
        make_scene(np.random.default_rng(0), 16, 64)


# ----------------------------------------------------------------------------------------------
# CLI


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test harness."""

    register(app)
    return app


def test_cli_writes_a_dataset(tmp_path: Path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli(), ["synth", str(out), "--n", "3", "--size", "48x32", "--seed", "4",
                                       "--layout", "fmb", "--quiet"])
    assert result.exit_code == 0, result.output
    assert tree(out) == set().union(*(names(f"{s}/{k}", idx) for s, idx in (("train", [0, 2]), ("test", [1]))
                                      for k in ("Infrared", "Visible", "Label")))
    with Image.open(out / "train/Visible/00000.png") as im:
        assert im.size == (48, 32)


def test_cli_progress_and_summary(tmp_path: Path):
    result = CliRunner().invoke(cli(), ["synth", str(tmp_path / "ds"), "--n", "2", "--size", "32x32"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 scene(s)" in result.stderr
    assert len(tree(tmp_path / "ds")) == 10


@pytest.mark.parametrize("args, words", [
    (["--size", "10x"], "--size must look like 640x480"),
    (["--size", "640*480"], "--size must look like 640x480"),
    (["--size", "16x16"], "too small"),
    (["--layout", "coco"], "unknown --layout"),
    (["--n", "0"], "--n must be at least 1"),
    (["--classes", "People,Dog"], "--classes 'People,Dog': use comma-separated names from People, Car"),
])
def test_cli_user_errors_exit_2_with_one_line(tmp_path: Path, args, words):
    result = CliRunner().invoke(cli(), ["synth", str(tmp_path / "ds"), *args])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert words in message and "\n" not in message and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_cli_class_names_map_to_m3fd_ids(tmp_path: Path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli(), ["synth", str(out), "--n", "4", "--size", "64x48", "--layout", "m3fd",
                                       "--classes", "people, TRUCK", "--min-object-height", "0.2", "--quiet"])
    assert result.exit_code == 0, result.output
    ids = {line.split()[0] for f in out.glob("labels/*/*.txt") for line in f.read_text().splitlines()}
    assert ids and ids <= {str(DET_CLASSES.index("People")), str(DET_CLASSES.index("Truck"))}


def test_cli_help_explains_every_option():
    result = CliRunner().invoke(cli(), ["synth", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    for option in ("--n", "--size", "--seed", "--layout", "--classes", "--min-object-height", "--quiet", "m3fd",
                   "vt5000", "OUT"):
        assert option in result.output
