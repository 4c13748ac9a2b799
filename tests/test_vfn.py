"""The base network: shapes, parameter count, the gradient operator, the name converter."""

import torch
import torch.nn.functional as F

from cldyn_cli.models.convert import authors_name_to_ours, convert_authors_state_dict, count_blocks
from cldyn_cli.models.fast_ops import channels_last_grad, pointwise_conv
from cldyn_cli.models.vfn import VFN, VFNConfig, avg_pool3, fold_batchnorm, max_pool3, spatial_gradient_magnitude


def test_any_size_keeps_shape_and_range() -> None:
    model = VFN().eval()
    for h, w in [(17, 23), (64, 48), (9, 130)]:
        with torch.no_grad():
            out = model(torch.rand(2, 1, h, w), torch.rand(2, 1, h, w))
        assert out.shape == (2, 1, h, w)
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_parameter_count_matches_the_published_model() -> None:
    assert sum(p.numel() for p in VFN().parameters()) == 46617
    assert len(VFN(VFNConfig(blocks=2)).ir_encoder.blocks) == 2


def test_spatial_gradient_is_sobel_over_8_with_replicate_border() -> None:
    x = torch.arange(25.0).reshape(1, 1, 5, 5)  # d/dx = 1 per pixel, d/dy = 5 per pixel
    g = spatial_gradient_magnitude(x)
    # Interior: Sobel_x of a unit ramp is 8 -> /8 = 1; Sobel_y gives 5; |1| + |5| = 6.
    assert torch.allclose(g[0, 0, 1:-1, 1:-1], torch.full((3, 3), 6.0))
    # Left border: replicate padding halves the x difference (0.5) while y stays 5.
    assert torch.allclose(g[0, 0, 2, 0], torch.tensor(5.5))


def test_spatial_gradient_equals_sobel_convolution_values_and_gradients() -> None:
    """The shifted-difference form against the per-channel Sobel convolution it replaces."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)

    def by_convolution(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
        return F.conv2d(padded, kernel).abs().sum(dim=1).reshape(x.shape)

    x = torch.randn(2, 3, 11, 9).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weights = torch.randn(2, 3, 11, 9)
    ours, reference = spatial_gradient_magnitude(x), by_convolution(x)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    grad_ours = torch.autograd.grad((ours * weights).sum(), x)[0]
    grad_reference = torch.autograd.grad((reference * weights).sum(), x)[0]
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-5, rtol=1e-5)


def test_authors_names_map_onto_ours() -> None:
    assert authors_name_to_ours("vi_feb.e2.Dcov1.0.weight") == "vis_encoder.blocks.2.conv1.0.weight"
    assert authors_name_to_ours("module.ir_feb.bfe.3.weight") == "ir_encoder.stem.3.weight"
    assert authors_name_to_ours("ir_feb.e0.conv.bias") == "ir_encoder.blocks.0.squeeze.bias"
    assert authors_name_to_ours("frb1.conv_mean_a.2.weight") == "fusion.conv_avg.2.weight"
    assert authors_name_to_ours("frb2.d3.Dcov2.1.running_mean") == "decoder.blocks.3.conv2.1.running_mean"
    assert authors_name_to_ours("frb2.res.3.weight") == "decoder.head.3.weight"


def test_a_model_with_authors_names_loads_after_conversion() -> None:
    ours = VFN().state_dict()
    inverse = {  # rebuild the authors' naming of every key, then convert back
        k.replace("vis_encoder.", "vi_feb.").replace("ir_encoder.", "ir_feb.").replace(".stem.", ".bfe.")
         .replace("decoder.blocks.", "frb2.d").replace("decoder.reduce.", "frb2.f_conv.")
         .replace("decoder.head.", "frb2.res.").replace(".conv1.", ".Dcov1.").replace(".conv2.", ".Dcov2.")
         .replace(".squeeze.", ".conv.").replace("fusion.mlp_avg.", "frb1.mlp_aa.")
         .replace("fusion.mlp_max.", "frb1.mlp_ma.").replace("fusion.conv_avg.", "frb1.conv_mean_a.")
         .replace("fusion.conv_max.", "frb1.conv_max_a.")
        : v for k, v in ours.items()}
    inverse = {k.replace("_feb.blocks.", "_feb.e"): v for k, v in inverse.items()}
    converted = convert_authors_state_dict(inverse)
    assert set(converted) == set(ours)
    assert count_blocks(converted) == 4
    VFN().load_state_dict(converted)


def test_folding_batchnorm_keeps_the_output() -> None:
    torch.manual_seed(0)
    model = VFN(VFNConfig(blocks=2)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x, y = torch.rand(1, 1, 30, 40), torch.rand(1, 1, 30, 40)
    with torch.no_grad():
        assert torch.allclose(model(x, y), folded(x, y), atol=1e-5)


def test_separable_pools_equal_torch_pools() -> None:
    x = torch.randn(2, 3, 9, 14)
    assert torch.allclose(max_pool3(x), torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1))
    assert torch.allclose(avg_pool3(x), torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1), atol=1e-6)


def test_residual_model_starts_as_the_brighter_source_and_corrects_it() -> None:
    torch.manual_seed(0)
    model = VFN(VFNConfig(blocks=1, residual=True)).eval()
    ir, vis = torch.rand(1, 1, 24, 31), torch.rand(1, 1, 24, 31)
    with torch.no_grad():
        assert torch.allclose(model(ir, vis), torch.maximum(ir, vis), atol=1e-7)
        torch.nn.init.constant_(model.decoder.head[3].bias, 0.2)  # the head now adds tanh(0.2) / 2 everywhere
        expected = (torch.maximum(ir, vis) + torch.tanh(torch.tensor(0.2)) / 2).clamp(0, 1)
        assert torch.allclose(model(ir, vis), expected, atol=1e-6)
    assert sum(p.numel() for p in VFN(VFNConfig(residual=True)).parameters()) == 46617  # same layers


def test_channels_last_grad_keeps_values_and_hands_on_a_channels_last_gradient() -> None:
    x = torch.rand(2, 8, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    seen = []
    x.register_hook(seen.append)
    y = channels_last_grad(x)
    assert torch.equal(y, x)
    # Each copy's gradient is a channel slice of the concatenation's: strided, not channels-last.
    (torch.cat([y, y], dim=1) * torch.arange(16.0).view(1, 16, 1, 1)).sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    expected = (torch.arange(8.0) + torch.arange(8.0, 16.0)).view(1, 8, 1, 1).expand(2, 8, 6, 5)
    assert torch.equal(seen[0], expected)
    plain = torch.rand(1, 3, 4, 4)
    assert channels_last_grad(plain) is plain  # no gradient, nothing to do


def test_training_forward_equals_inference_forward_and_reaches_every_weight() -> None:
    """The training path (max_pool2d, oneDNN 1x1 squeezes, channels-last gradients) computes what
    the no-gradient path does, and every weight gets a gradient."""
    torch.manual_seed(0)
    model = VFN(VFNConfig(blocks=2)).to(memory_format=torch.channels_last).eval()
    ir = torch.rand(2, 1, 20, 24).contiguous(memory_format=torch.channels_last)
    vis = torch.rand(2, 1, 20, 24).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(ir, vis)
    out = model(ir, vis)
    assert torch.allclose(out, reference, atol=1e-6)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pointwise_conv_equals_the_module_forward_and_backward() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 8, 1)
    x = torch.rand(2, 24, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = pointwise_conv(conv, x)
    weights = torch.randn(out.shape)
    fast = torch.autograd.grad((out * weights).sum(), [x, conv.weight, conv.bias])
    reference = torch.autograd.grad((conv(x) * weights).sum(), [x, conv.weight, conv.bias])
    torch.testing.assert_close(out, conv(x), atol=1e-6, rtol=1e-6)
    for got, want in zip(fast, reference):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(pointwise_conv(conv, x), conv(x), atol=1e-6, rtol=1e-6)
    conv.requires_grad_(False)  # a frozen network (the base inside `compensate`): the input's gradient only
    (frozen,) = torch.autograd.grad((pointwise_conv(conv, x) * weights).sum(), [x])
    torch.testing.assert_close(frozen, reference[0], atol=1e-5, rtol=1e-5)
