"""The images a residual base network corrects (cldyn_cli/models/prior.py)."""

import pytest
import torch
import torch.nn.functional as F

from cldyn_cli.config import build
from cldyn_cli.errors import UserError
from cldyn_cli.models.prior import _solve_by_matrices, gradient_domain, poisson_solve, residual_prior
from cldyn_cli.models.vfn import VFN, VFNConfig


def neumann_laplacian(u: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian with mirrored borders, written out by hand."""
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u


def test_poisson_solve_inverts_the_laplacian_up_to_the_mean() -> None:
    u = torch.rand(2, 1, 13, 17, dtype=torch.float64)
    u = u - u.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(poisson_solve(neumann_laplacian(u)), u, atol=1e-10)


def test_the_exportable_cosine_matrix_solve_equals_the_fast_transform() -> None:
    divergence = torch.randn(2, 1, 13, 17, dtype=torch.float64)
    assert torch.allclose(_solve_by_matrices(divergence), poisson_solve(divergence), atol=1e-10)


def test_half_precision_is_solved_in_single_and_returned_as_given() -> None:
    divergence = torch.randn(1, 1, 12, 10)
    solved = poisson_solve(divergence.bfloat16())
    assert solved.dtype == torch.bfloat16
    assert torch.allclose(solved.float(), poisson_solve(divergence.bfloat16().float()), atol=1e-2)


def test_each_image_of_a_batch_is_solved_on_its_own() -> None:
    ir, vis = torch.rand(3, 1, 20, 24), torch.rand(3, 1, 20, 24)
    whole = gradient_domain(ir, vis)
    for i in range(3):
        assert torch.allclose(whole[i:i + 1], gradient_domain(ir[i:i + 1], vis[i:i + 1]), atol=1e-6)


def test_gradient_domain_fusion_integrates_the_sharper_sources_differences() -> None:
    ramp = torch.linspace(0.2, 0.7, 30).expand(1, 1, 20, 30)  # the only edges: the visible image's ramp
    assert torch.allclose(gradient_domain(torch.zeros(1, 1, 20, 30), ramp), ramp, atol=1e-6)
    # A gentler IR ramp across it: the visible slope (0.5 / 29 per pixel) beats IR's (0.3 / 19)
    # everywhere, so only the visible ramp's differences survive, lifted to the mean of max(IR, Y).
    ir = torch.linspace(0.0, 0.3, 20).view(20, 1).expand(1, 1, 20, 30)
    lifted = ramp + (torch.maximum(ir, ramp).mean() - ramp.mean())
    assert torch.allclose(gradient_domain(ir, ramp), lifted, atol=1e-6)


def test_flat_images_give_the_brighter_level() -> None:
    ir, vis = torch.full((1, 1, 9, 11), 0.3), torch.full((1, 1, 9, 11), 0.6)
    assert torch.allclose(gradient_domain(ir, vis), vis, atol=1e-6)


def test_a_residual_model_with_a_zero_head_returns_its_prior() -> None:
    ir, vis = torch.rand(2, 1, 21, 19), torch.rand(2, 1, 21, 19)
    for prior in ("max", "poisson"):
        model = VFN(VFNConfig(blocks=1, residual=True, prior=prior)).eval()  # the head starts at zero
        with torch.no_grad():
            assert torch.allclose(model(ir, vis), residual_prior(ir, vis, prior), atol=1e-6)
    assert VFN(VFNConfig(blocks=1)).prior(ir, vis) is None  # a plain model corrects nothing


def test_an_unknown_prior_is_refused() -> None:
    with pytest.raises(UserError, match="prior"):
        build(VFNConfig, {"prior": "median"}, "the config of m.safetensors")
    with pytest.raises(ValueError, match="median"):
        residual_prior(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "median")
