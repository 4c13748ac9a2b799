"""The inference form of the VFN gives the plain network's output, and its parts their plain twins'."""

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cldyn_cli.colour import luminance, recombine
from cldyn_cli.fusion import BAND_ROWS, Fuser, fuse_images, to_array, to_tensor
from cldyn_cli.models.inference import channel_max, fill_border_, inference_vfn, padded_buffer
from cldyn_cli.models.vfn import (VFN, VFNConfig, apply_stretch, padded_gradient_magnitude, spatial_gradient_magnitude,
                                  stretch_bounds, stretch_range)
from cldyn_cli.runtime import TRAINING_BLOCKS, reuse_freed_memory


def trained_like(config: VFNConfig) -> VFN:
    """A VFN with non-trivial BatchNorm statistics and a non-zero residual head, as after training."""
    torch.manual_seed(config.blocks)
    model = VFN(config).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.decoder.head[3].weight, std=0.3)  # zero at init for residual models
    return model


def channels_last(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.contiguous(memory_format=torch.channels_last) for t in ts]


@pytest.mark.parametrize("blocks", [1, 2, 4])
@pytest.mark.parametrize("residual,prior", [(False, "max"), (True, "max"), (True, "poisson")])
def test_inference_form_equals_the_plain_network(blocks: int, residual: bool, prior: str) -> None:
    model = trained_like(VFNConfig(blocks=blocks, residual=residual, prior=prior))
    fast = inference_vfn(model).to(memory_format=torch.channels_last)
    for h, w in [(17, 23), (30, 41), (9, 130)]:
        ir, vis = torch.rand(2, 1, h, w), torch.rand(2, 1, h, w)
        with torch.no_grad():
            expected = model(ir, vis, stretch=False)
            got = fast(*channels_last(ir, vis))
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5), (h, w, float((got - expected).abs().max()))


@pytest.mark.parametrize("tile", [None, 32])
@pytest.mark.parametrize("stretch,prior", [(False, "max"), (True, "max"), (True, "poisson")])
def test_fuser_equals_the_plain_network_tiled_or_not(tile, stretch: bool, prior: str) -> None:
    """Exact tiling: the Poisson prior is global, so tiles must use windows of the whole image's."""
    model = trained_like(VFNConfig(blocks=2, residual=True, stretch=stretch, stretch_clip=0.01, prior=prior))
    ir, vis = torch.rand(1, 1, 71, 95), torch.rand(1, 1, 71, 95)
    with torch.no_grad():
        expected = model(ir, vis)
    got = Fuser(model, torch.device("cpu"), tile=tile).fuse_y(ir, vis)
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_trained_model_is_left_as_it_was() -> None:
    model = trained_like(VFNConfig(blocks=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inference_vfn(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_separable_sobel_equals_the_gradient_operator() -> None:
    x = torch.randn(2, 5, 13, 17)
    buf, inner = padded_buffer(x, 5)
    inner.copy_(x)
    assert torch.allclose(padded_gradient_magnitude(fill_border_(buf, "replicate")), spatial_gradient_magnitude(x), atol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_filled_border_equals_padding(mode: str) -> None:
    x = torch.randn(1, 3, 6, 9)
    buf, inner = padded_buffer(x, 3)
    inner.copy_(x)
    assert torch.equal(fill_border_(buf, mode), F.pad(x, (1, 1, 1, 1), mode=mode))


@pytest.mark.parametrize("h,w", [(1, 1), (7, 5), (31, 33)])
def test_channel_max_equals_amax(h: int, w: int) -> None:
    x = torch.randn(2, 4, h, w).contiguous(memory_format=torch.channels_last)
    assert torch.equal(channel_max(x), x.amax(dim=(2, 3)))


def test_quantiles_by_selection_equal_the_sorted_ones() -> None:
    y = torch.rand(3, 1, 37, 29)
    for clip in (0.0, 0.001, 0.05, 0.3):
        sorted_lo, sorted_span = stretch_bounds(y, clip)
        lo, span = stretch_bounds(y, clip, select=True)
        assert torch.equal(lo, sorted_lo) and torch.equal(span, sorted_span)
        assert torch.equal(apply_stretch(y, lo, span), stretch_range(y, clip))


def test_colour_in_bands_equals_whole_image_colour() -> None:
    model = trained_like(VFNConfig(blocks=1))
    fuser = Fuser(model, torch.device("cpu"))
    rng = np.random.default_rng(0)
    ir, vis = rng.random((BAND_ROWS + 37, 12), np.float32), rng.random((BAND_ROWS + 37, 12, 3), np.float32)
    vis_t = to_tensor(vis)
    whole = to_array(recombine(fuser.fuse_y(to_tensor(ir), luminance(vis_t)), vis_t))
    banded = fuse_images(fuser, ir, vis)
    assert banded.shape == vis.shape and banded.dtype == np.float32
    assert np.allclose(banded, whole, atol=1e-6)


def test_freed_memory_reuse_is_set_where_the_c_library_is_glibc() -> None:
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert reuse_freed_memory() is expected
    assert reuse_freed_memory(TRAINING_BLOCKS) is expected  # setting it again, larger, is allowed
    assert reuse_freed_memory() is expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the inference form's GPU path")
@pytest.mark.parametrize("tile", [None, 32])
def test_fusion_on_the_gpu_equals_the_plain_network_on_the_cpu(tile, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 convolutions round to 1e-3
    model = trained_like(VFNConfig(blocks=2, residual=True, stretch=True, stretch_clip=0.01))
    ir, vis = torch.rand(1, 1, 71, 95), torch.rand(1, 1, 71, 95)
    with torch.no_grad():
        expected = model(ir, vis)
    got = Fuser(model, torch.device("cuda"), tile=tile).fuse_y(ir, vis)
    assert got.device.type == "cpu"
    assert torch.allclose(got, expected, atol=1e-5)
