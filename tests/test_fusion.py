"""The fusion pipeline: exact tiling, odd sizes, grayscale visible, colour recombination."""

import numpy as np
import pytest
import torch

from cldyn_cli.colour import rgb_to_ycbcr
from cldyn_cli.fusion import Fuser, fuse_images, windows
from cldyn_cli.models.vfn import VFN, VFNConfig, stretch_range, with_stretch


@pytest.fixture
def model() -> VFN:
    torch.manual_seed(0)
    net = VFN(VFNConfig(blocks=2)).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, as in a trained model
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def test_windows_cover_every_pixel_once() -> None:
    covered = np.zeros((70, 45), int)
    for w in windows(70, 45, 32, 5):
        covered[w.y0:w.y1, w.x0:w.x1] += 1
        assert w.wy0 == max(0, w.y0 - 5) and w.wx1 == min(45, w.x1 + 5)
    assert (covered == 1).all()


def test_tiled_fusion_equals_whole_image_fusion(model: VFN) -> None:
    ir, vis = torch.rand(1, 1, 150, 203), torch.rand(1, 1, 150, 203)
    whole = Fuser(model, torch.device("cpu")).fuse_y(ir, vis)
    tiled = Fuser(model, torch.device("cpu"), tile=64).fuse_y(ir, vis)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_automatic_tiling_above_the_threshold(model: VFN) -> None:
    ir, vis = torch.rand(1, 1, 90, 100), torch.rand(1, 1, 90, 100)
    auto = Fuser(model, torch.device("cpu"), auto_tile_pixels=1000)
    assert auto._tile_for(90, 100) is not None
    assert torch.allclose(auto.fuse_y(ir, vis), Fuser(model, torch.device("cpu")).fuse_y(ir, vis), atol=1e-5)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 17), (31, 7)])
def test_tiny_and_odd_sizes(model: VFN, h: int, w: int) -> None:
    out = fuse_images(Fuser(model, torch.device("cpu")), np.random.rand(h, w), np.random.rand(h, w, 3))
    assert out.shape == (h, w, 3)


def test_grayscale_visible_gives_grayscale_and_colour_keeps_chroma(model: VFN) -> None:
    fuser = Fuser(model, torch.device("cpu"))
    ir = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    assert fuse_images(fuser, ir, np.full((20, 24), 0.4, np.float32)).shape == (20, 24)
    vis = np.zeros((20, 24, 3), np.float32)
    vis[...] = (0.5, 0.4, 0.3)
    out = fuse_images(fuser, ir, vis)
    cbcr_out = rgb_to_ycbcr(torch.from_numpy(out).permute(2, 0, 1)[None])[0, 1:]
    cbcr_vis = rgb_to_ycbcr(torch.from_numpy(vis).permute(2, 0, 1)[None])[0, 1:]
    assert torch.allclose(cbcr_out, cbcr_vis, atol=1e-4)


def test_stretch_maps_each_image_to_the_full_range() -> None:
    y = torch.tensor([[[[0.2, 0.4], [0.3, 0.6]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    out = stretch_range(y)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], y[1])  # a flat image has no range to stretch


def test_stretched_tiled_fusion_equals_whole_image_fusion(model: VFN) -> None:
    model.config = VFNConfig(blocks=2, stretch=True)
    ir, vis = torch.rand(1, 1, 150, 203), torch.rand(1, 1, 150, 203)
    whole = Fuser(model, torch.device("cpu")).fuse_y(ir, vis)
    tiled = Fuser(model, torch.device("cpu"), tile=64).fuse_y(ir, vis)
    assert torch.allclose(whole, tiled, atol=1e-5)
    assert whole.min().item() == pytest.approx(0.0, abs=1e-6) and whole.max().item() == pytest.approx(1.0, abs=1e-6)
    raw = Fuser(with_stretch(model, False), torch.device("cpu")).fuse_y(ir, vis)
    assert torch.allclose(stretch_range(raw), whole, atol=1e-5)


def test_clipped_stretch_ignores_outliers() -> None:
    core = torch.linspace(0.2, 0.6, 100)
    y = torch.cat([torch.tensor([0.0]), core, torch.tensor([1.0])]).view(1, 1, 2, 51)
    out = stretch_range(y, clip=0.01)  # 102 values: one may saturate at each end
    assert torch.allclose(out.flatten()[1:-1], (core - 0.2) / 0.4, atol=1e-6)
    assert out.flatten()[0] == 0.0 and out.flatten()[-1] == 1.0
    assert torch.allclose(stretch_range(y), y)  # min 0 and max 1 already: plain min-max changes nothing
