"""The Python API: `from cldyn_cli import Fuser`, any image kind in, the visible input's kind out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cldyn_cli import Fuser
from cldyn_cli.data.images import read_image, read_infrared
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import to_tensor


@pytest.fixture(scope="module")
def fuser() -> Fuser:
    return Fuser(device="cpu")  # the shipped base model


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1, (24, 32)).astype(np.float32), rng.uniform(0, 1, (24, 32, 3)).astype(np.float32)


def test_uint8_uint16_and_float_inputs_agree_and_keep_their_kind(fuser, images) -> None:
    ir, vis = images
    ir8, vis8 = np.round(ir * 255).astype(np.uint8), np.round(vis * 255).astype(np.uint8)
    out_f = fuser(ir8.astype(np.float32) / 255, vis8.astype(np.float32) / 255)
    out8 = fuser(ir8, vis8)
    out16 = fuser(ir8.astype(np.uint16) * 257, vis8.astype(np.uint16) * 257)  # the same values at 16 bits
    assert out_f.dtype == np.float32 and out8.dtype == np.uint8 and out16.dtype == np.uint16
    assert out8.shape == out16.shape == out_f.shape == (24, 32, 3)
    assert np.array_equal(out8, np.round(out_f * 255).astype(np.uint8))
    assert np.abs(out16.astype(np.float64) / 65535 - out_f).max() < 1e-4
    assert out8.mean() > 20  # uint8 read as floats would saturate to white: 255 everywhere
    assert not (out8 == 255).all()


def test_pil_images_in_pil_image_out(fuser, images) -> None:
    ir, vis = images
    ir_pil = Image.fromarray(np.round(ir * 255).astype(np.uint8))  # mode L
    gray = Image.fromarray(np.round(vis[..., 0] * 255).astype(np.uint8))
    colour = Image.fromarray(np.round(vis * 255).astype(np.uint8))
    assert fuser(ir_pil, colour).mode == "RGB" and fuser(ir_pil, colour).size == (32, 24)
    out = fuser(ir_pil, gray)
    assert out.mode == "L"
    assert np.array_equal(np.asarray(out), fuser(np.asarray(ir_pil), np.asarray(gray)))


def test_wrong_kinds_are_refused(fuser, images) -> None:
    ir, vis = images
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        fuser(ir * 255, vis)
    with pytest.raises(TypeError, match="int32"):
        fuser(ir, (vis * 255).astype(np.int32))
    with pytest.raises(ValueError, match="differ in size"):
        fuser(ir[:10], vis)
    with pytest.raises(TypeError, match="NumPy array or a PIL image"):
        fuser(ir.tolist(), vis)
    with pytest.raises(TypeError, match="uint8"):  # the internal conversion refuses integers too
        to_tensor((vis * 255).astype(np.uint8))


def test_the_api_matches_cldyn_fuse(pair_dirs, tmp_path: Path, fuser) -> None:
    from typer.testing import CliRunner

    from cldyn_cli.cli import create_app

    result = CliRunner().invoke(create_app(), ["fuse", *map(str, pair_dirs), "-o", str(tmp_path), "--quiet",
                                               "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ir_dir, vis_dir = pair_dirs
    ir = np.asarray(Image.open(ir_dir / "001.png"))
    vis = np.asarray(Image.open(vis_dir / "001.PNG"))
    assert np.array_equal(fuser(ir, vis), np.asarray(Image.open(tmp_path / "001.png")))
    assert np.allclose(fuser(read_infrared(ir_dir / "001.png"), read_image(vis_dir / "001.PNG")),
                       fuser(ir, vis) / 255, atol=0.5 / 255 + 1e-6)


def test_base_and_rsc_and_task_misuse_are_user_errors() -> None:
    with pytest.raises(UserError, match="task and rsc go together"):
        Fuser(rsc="x.safetensors", device="cpu")
    with pytest.raises(UserError, match="base cannot be combined with rsc"):
        Fuser("b.safetensors", rsc="x.safetensors", task="toyseg", device="cpu")
