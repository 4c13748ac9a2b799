"""`cldyn fuse` from the command line: outputs, odd inputs, and one-line errors with status 2."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cldyn_cli.cli import app
from cldyn_cli.data.images import read_image
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig
from imagefiles import save_gray, save_rgb

runner = CliRunner()


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> Path:
    """A one-block base model: same code path, fast enough for large images."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    save_vfn(VFN(VFNConfig(blocks=1)), path, {"steps": 0})
    return path


def fuse(*args: str):
    return runner.invoke(app, ["fuse", *args, "--quiet", "--device", "cpu"])


def test_folders_fuse_to_one_png_per_pair(pair_dirs, tmp_path: Path, small_base: Path) -> None:
    ir, vis = pair_dirs
    result = fuse(str(ir), str(vis), "-o", str(tmp_path / "out"), "--base", str(small_base))
    assert result.exit_code == 0, result.output
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["000.png", "001.png", "002.png"]
    assert read_image(tmp_path / "out" / "002.png").shape == (64, 64, 3)


def test_embedded_model_is_the_default(pair_dirs, tmp_path: Path) -> None:
    ir, vis = pair_dirs
    result = fuse(str(ir / "000.png"), str(vis / "000.PNG"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "000.png").exists()


def test_grayscale_visible_and_16bit_tiff_infrared(tmp_path: Path, small_base: Path) -> None:
    rng = np.random.default_rng(0)
    save_gray(tmp_path / "ir" / "a.tiff", rng.random((37, 51)), bits=16)
    save_gray(tmp_path / "vis" / "a.jpg", rng.random((37, 51)))
    result = fuse(str(tmp_path / "ir"), str(tmp_path / "vis"), "-o", str(tmp_path / "out"), "--base", str(small_base))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.mode == "L" and im.size == (51, 37)


def test_large_pair_is_tiled_and_keeps_its_size(tmp_path: Path, small_base: Path) -> None:
    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w]
    save_gray(tmp_path / "ir" / "big.png", ((xx // 50 + yy // 50) % 2) * 0.8)
    save_rgb(tmp_path / "vis" / "big.png", np.stack([xx / w, yy / h, np.full((h, w), 0.5)], -1))
    result = fuse(str(tmp_path / "ir"), str(tmp_path / "vis"), "-o", str(tmp_path / "out"), "--base", str(small_base))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "big.png") as im:
        assert im.size == (w, h) and im.mode == "RGB"


def test_resize_option_handles_a_size_mismatch(tmp_path: Path, small_base: Path) -> None:
    save_gray(tmp_path / "ir" / "a.png", np.zeros((20, 30)))
    save_rgb(tmp_path / "vis" / "a.png", np.zeros((40, 60, 3)))
    args = [str(tmp_path / "ir"), str(tmp_path / "vis"), "-o", str(tmp_path / "out"), "--base", str(small_base)]
    refused = fuse(*args)
    assert refused.exit_code == 2 and "pass --resize" in refused.output
    assert not (tmp_path / "out").exists()
    assert fuse(*args, "--resize").exit_code == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (40, 60, 3)


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output


def test_user_errors_are_one_line_with_status_2(pair_dirs, tmp_path: Path, small_base: Path) -> None:
    ir, vis = pair_dirs
    one_line_error(fuse(str(tmp_path / "nope"), str(vis), "-o", str(tmp_path / "o")), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(fuse(str(tmp_path / "empty"), str(vis), "-o", str(tmp_path / "o")), "no images in")
    (tmp_path / "file").write_text("x")
    one_line_error(fuse(str(ir), str(vis), "-o", str(tmp_path / "file")), "is a file")
    one_line_error(fuse(str(ir), str(vis), "-o", str(tmp_path / "o"), "--base", str(tmp_path / "file")),
                   "not a readable safetensors checkpoint")
    one_line_error(fuse(str(ir), str(vis), "-o", str(tmp_path / "o"), "--task", "nosuchtask", "--rsc",
                        str(tmp_path / "file")), "unknown task")
    assert not (tmp_path / "o").exists()


def test_existing_outputs_need_overwrite(pair_dirs, tmp_path: Path, small_base: Path) -> None:
    ir, vis = pair_dirs
    args = [str(ir), str(vis), "-o", str(tmp_path / "out"), "--base", str(small_base)]
    assert fuse(*args).exit_code == 0
    one_line_error(fuse(*args), "3 output(s) already exist")
    assert fuse(*args, "--overwrite").exit_code == 0


def test_truncated_image_leaves_no_partial_output(pair_dirs, tmp_path: Path, small_base: Path) -> None:
    ir, vis = pair_dirs
    broken = save_rgb(vis / "002.PNG", np.random.default_rng(0).random((64, 64, 3)))
    broken.write_bytes(broken.read_bytes()[:2000])  # cut inside the pixel data
    result = fuse(str(ir), str(vis), "-o", str(tmp_path / "out"), "--base", str(small_base))
    one_line_error(result, "002.PNG")
    assert not (tmp_path / "out").exists()


def test_help_explains_every_option() -> None:
    result = runner.invoke(app, ["fuse", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--base", "--task", "--tile", "--resize", "--device", "--overwrite", "--quiet"):
        assert option in result.output


def test_a_folder_of_mixed_sizes_jpeg_and_grey_visible_fuses_without_flags(tmp_path: Path, small_base: Path) -> None:
    rng = np.random.default_rng(1)
    save_gray(tmp_path / "ir" / "road.jpg", rng.random((30, 49)))
    save_rgb(tmp_path / "vis" / "road.jpg", rng.random((30, 49, 3)))  # RoadScene: 8-bit JPEG colour
    grey = rng.random((41, 36))
    save_gray(tmp_path / "ir" / "tno.png", rng.random((41, 36)))
    save_rgb(tmp_path / "vis" / "tno.png", np.stack([grey] * 3, axis=-1))  # TNO: grey content stored as RGB
    save_gray(tmp_path / "ir" / "flat.png", rng.random((25, 64)))
    save_gray(tmp_path / "vis" / "flat.png", rng.random((25, 64)))  # a true one-channel visible image
    result = fuse(str(tmp_path / "ir"), str(tmp_path / "vis"), "-o", str(tmp_path / "out"), "--base", str(small_base))
    assert result.exit_code == 0, result.output
    sizes = {p.stem: read_image(p).shape for p in (tmp_path / "out").iterdir()}
    assert sizes == {"road": (30, 49, 3), "tno": (41, 36, 3), "flat": (25, 64)}
