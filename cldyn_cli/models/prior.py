"""What a residual base network corrects: the brighter source, or a gradient-domain fusion of both.

A VFN sees at most a few dozen pixels around each output pixel. With ``prior="max"`` it corrects
max(IR, Y), whose layout is the brighter source's everywhere. With ``prior="poisson"`` it corrects
the gradient-domain fusion: the image whose pixel differences best match those of the locally
sharper source (the loss's "selected" texture target), brought to the mean brightness of
max(IR, Y). That image is a global solution (a Poisson equation over the whole frame), so it gives
the network the large-scale contrast that its receptive field cannot reach; the network only has
to correct it locally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy import fft

from cldyn_cli.losses import selected_differences

PRIORS = ("max", "poisson")


def residual_prior(ir: torch.Tensor, vis_y: torch.Tensor, kind: str) -> torch.Tensor:
    """The image (B, 1, H, W) that a residual VFN with ``prior=kind`` corrects."""
    if kind == "max":
        return torch.maximum(ir, vis_y)
    if kind == "poisson":
        return gradient_domain(ir, vis_y)
    raise ValueError(f"prior {kind!r} is not one of {', '.join(PRIORS)}")


def gradient_domain(ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """The least-squares image whose forward differences are the selected source's, with the mean
    of max(IR, Y) per image, clipped to [0, 1]; (B, 1, H, W) in, the same out."""
    image = poisson_solve(selected_divergence(ir, vis_y))
    brightness = torch.maximum(ir, vis_y).mean(dim=(-2, -1), keepdim=True)
    return (image - image.mean(dim=(-2, -1), keepdim=True) + brightness).clamp(0.0, 1.0)


def selected_divergence(ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """div g of the selected differences g, with no difference leaving the last row or column:
    the right-hand side of the normal equations of the least-squares fit (mirrored borders)."""
    dx, dy = selected_differences(ir, vis_y)
    gx, gy = F.pad(dx, (1, 1)), F.pad(dy, (0, 0, 1, 1))  # zero flux through every border
    return (gx[..., 1:] - gx[..., :-1]) + (gy[..., 1:, :] - gy[..., :-1, :])


def poisson_solve(divergence: torch.Tensor) -> torch.Tensor:
    """A zero-mean solution u of Laplacian(u) = ``divergence`` with mirrored (Neumann) borders.

    The 5-point Laplacian with mirrored borders is diagonal in the type-II cosine transform: one
    transform, a division by its eigenvalues, one inverse. Eager calls use SciPy's fast transform
    in single or double precision (as the input's); an ONNX export writes the transforms as products
    with cosine matrices built from the image size (in double precision), which any runtime can run.
    """
    if torch.onnx.is_in_onnx_export():
        return _solve_by_matrices(divergence)
    exact = divergence.dtype if divergence.dtype in (torch.float32, torch.float64) else torch.float32
    h, w = divergence.shape[-2:]
    spectrum = fft.dctn(divergence.detach().to("cpu", exact).numpy(), axes=(-2, -1), norm="ortho")
    spectrum /= _eigenvalues(torch.tensor(h), torch.tensor(w)).numpy().astype(spectrum.dtype)
    spectrum[..., 0, 0] = 0.0  # the mean is free in the equation; the caller sets it
    solution = fft.idctn(spectrum, axes=(-2, -1), norm="ortho")
    return torch.from_numpy(solution).to(divergence.device, divergence.dtype)


def _eigenvalues(height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """The Laplacian's eigenvalue of each cosine mode (double precision), the constant mode's (the
    only zero) set to 1 so that dividing by it is harmless: its coefficient is dropped. The sizes
    are 0-d tensors, so that an export keeps them dynamic."""
    rows, cols = torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64)
    eigen = (2 * torch.cos(torch.pi * rows / height) - 2)[:, None] + (2 * torch.cos(torch.pi * cols / width) - 2)[None, :]
    return torch.where(eigen == 0, 1.0, eigen)


def _cosine_matrix(n: torch.Tensor) -> torch.Tensor:
    """The orthonormal type-II DCT matrix of size ``n`` (a 0-d tensor, so that export keeps it dynamic)."""
    index = torch.arange(n, dtype=torch.float64)
    cos = torch.cos(torch.pi * index[:, None] * (2 * index[None, :] + 1) / (2 * n))
    scale = torch.where(index == 0, torch.sqrt(1 / n.double()), torch.sqrt(2 / n.double()))
    return cos * scale[:, None]


def _solve_by_matrices(divergence: torch.Tensor) -> torch.Tensor:
    """:func:`poisson_solve` with the transforms as matrix products (for graphs)."""
    h, w = torch.tensor(divergence.shape[-2]), torch.tensor(divergence.shape[-1])
    ch, cw = _cosine_matrix(h), _cosine_matrix(w)
    eigen = _eigenvalues(h, w)
    spectrum = ch @ divergence.double() @ cw.T / eigen
    spectrum = torch.where(eigen == 1, torch.zeros_like(spectrum), spectrum)  # drop the constant mode
    return (ch.T @ spectrum @ cw).to(divergence.dtype)
