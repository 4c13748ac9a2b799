"""BT.601 colour conversion and the base fusion loss, against hand-computed values."""

import pytest
import torch

from cldyn_cli.colour import recombine, rgb_to_ycbcr, ycbcr_to_rgb
from cldyn_cli.losses import fusion_loss, selected_differences, sobel_magnitude


def test_ycbcr_of_primaries_matches_method_coefficients() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    y, cb, cr = rgb_to_ycbcr(rgb).flatten().tolist()
    assert abs(y - 0.299) < 1e-6
    assert abs(cb - (-0.1687 + 128 / 255)) < 1e-6
    assert abs(cr - (0.5 + 128 / 255)) < 1e-6


def test_round_trip_is_identity() -> None:
    rgb = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-6)


def test_recombine_keeps_visible_chroma_and_gray_stays_gray() -> None:
    vis = torch.rand(1, 3, 4, 4)
    y = torch.rand(1, 1, 4, 4)
    out = recombine(y, vis)
    ycc_out, ycc_vis = rgb_to_ycbcr(out), rgb_to_ycbcr(vis)
    inside = (out > 0.001).all(1) & (out < 0.999).all(1)  # unclamped pixels keep chroma exactly
    assert torch.allclose(ycc_out[:, 1:][:, :, inside[0]], ycc_vis[:, 1:][:, :, inside[0]], atol=1e-5)
    assert recombine(y, torch.rand(1, 1, 4, 4)).shape == (1, 1, 4, 4)


def test_sobel_of_a_step_edge() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[..., 3:] = 1.0  # vertical edge between columns 2 and 3
    s = sobel_magnitude(x)
    assert s[0, 0, 2].tolist() == [0.0, 0.0, 4.0, 4.0, 4.0]  # (1+2+1) * 1; zero padding past the right edge
    assert s[0, 0, 0].tolist() == [0.0, 0.0, 4.0, 6.0, 6.0]  # top row: 3 across + 3 down (zero padding above)


def test_loss_is_zero_only_when_both_terms_are_met() -> None:
    ir, vis = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    ir[..., :4] = 0.8
    vis[..., 2:6, :] = 0.5
    fused = torch.maximum(ir, vis)
    # The intensity term vanishes for the element-wise maximum, but its texture is not the larger
    # of the two textures (where the sources' edges cross), so only the texture term remains.
    texture = (sobel_magnitude(fused) - torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis))).abs().mean()
    assert float(texture) > 0
    assert abs(float(fusion_loss(fused, ir, vis)) - float(texture)) < 1e-6
    assert float(fusion_loss(ir, ir, ir)) == 0.0  # identical sources: fusing into either is perfect


def test_loss_of_a_constant_against_black_sources() -> None:
    # F = c on 3x3, sources 0: intensity 0.2 * c; Sobel of a zero-padded constant is
    # [[6,4,6],[4,0,4],[6,4,6]] * c with mean 40/9 * c.
    c = 0.5
    loss = fusion_loss(torch.full((1, 1, 3, 3), c), torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    assert abs(float(loss) - (0.2 * c + 40 / 9 * c)) < 1e-6


def _ramps(ir_slope: float, vis_slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IR rising along x, visible rising along y, 6x6."""
    steps = torch.arange(6.0)
    return (ir_slope * steps).expand(1, 1, 6, 6), (vis_slope * steps).view(6, 1).expand(1, 1, 6, 6)


def test_selected_differences_follow_the_locally_sharper_source() -> None:
    ir, vis = _ramps(0.2, 0.1)  # IR's gradient norm (0.2) beats the visible's (0.1) everywhere
    dx, dy = selected_differences(ir, vis)
    assert torch.allclose(dx, torch.full((1, 1, 6, 5), 0.2)) and torch.allclose(dy, torch.zeros(1, 1, 5, 6))
    ir, vis = _ramps(0.2, 0.3)  # now the visible image is sharper everywhere
    dx, dy = selected_differences(ir, vis)
    assert torch.allclose(dx, torch.zeros(1, 1, 6, 5)) and torch.allclose(dy, torch.full((1, 1, 5, 6), 0.3))


def test_selected_texture_counts_the_sign_of_an_edge() -> None:
    ir, vis = _ramps(0.2, 0.1)
    # F = 0: the x differences miss 0.2 each, the y differences match; no intensity term.
    flat = fusion_loss(torch.zeros(1, 1, 6, 6), ir, vis, intensity_weight=0.0, gradient_target="selected")
    assert abs(float(flat) - 0.2) < 1e-6
    # The reversed ramp has IR's Sobel magnitudes (the paper's texture term is blind to it), but
    # every difference has the wrong sign: |-0.2 - 0.2| = 0.4.
    reversed_ramp = ir.flip(-1)
    assert float(fusion_loss(reversed_ramp, ir, vis, intensity_weight=0.0, gradient_target="selected")) == \
        pytest.approx(0.4, abs=1e-6)
    shifted = fusion_loss(ir + 0.1, ir, vis, intensity_weight=0.0, gradient_target="selected")
    assert float(shifted) < 1e-6  # only differences count, not the level
    with pytest.raises(ValueError, match="gradient_target 'x' is not one of sobel_max, selected"):
        fusion_loss(ir, ir, vis, gradient_target="x")
