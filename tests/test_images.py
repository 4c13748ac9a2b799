"""Image reading: bit depths, modes, formats, and unreadable files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cldyn_cli.data.images import read_image, read_infrared, to_uint8, write_png
from cldyn_cli.errors import UserError
from imagefiles import save_gray, save_rgb


def test_16bit_tiff_scales_by_65535(tmp_path: Path) -> None:
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "t.tiff")
    out = read_infrared(tmp_path / "t.tiff")
    np.testing.assert_allclose(out, arr / 65535.0, rtol=1e-6)


def test_8bit_png_scales_by_255(tmp_path: Path) -> None:
    arr = np.array([[0, 255], [128, 3]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "g.png"), arr / 255.0, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["png", "jpg", "bmp", "tif"])
def test_rgb_formats_read_as_three_channels(tmp_path: Path, fmt: str) -> None:
    img = np.full((6, 7, 3), 0.5)
    save_rgb(tmp_path / f"x.{fmt}", img)
    out = read_image(tmp_path / f"x.{fmt}")
    assert out.shape == (6, 7, 3) and out.dtype == np.float32
    assert abs(float(out.mean()) - 128 / 255) < 0.02


def test_rgb_infrared_uses_first_channel(tmp_path: Path) -> None:
    img = np.zeros((4, 4, 3))
    img[..., 0] = 1.0
    save_rgb(tmp_path / "ir.png", img)
    assert read_infrared(tmp_path / "ir.png").min() == 1.0


def test_truncated_image_is_a_user_error(tmp_path: Path) -> None:
    path = save_gray(tmp_path / "t.png", np.random.default_rng(0).random((64, 64)))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read image .*t.png"):
        read_image(path)


def test_write_png_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(1).random((5, 9, 3)).astype(np.float32)
    write_png(img, tmp_path / "sub" / "o.png")
    back = read_image(tmp_path / "sub" / "o.png")
    np.testing.assert_array_equal(to_uint8(back), to_uint8(img))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.png"]
