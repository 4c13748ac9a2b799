"""CAGrad combination of per-task gradients, as docs/method.md specifies it.

With G the T x P matrix of task gradients and A = G G^T, the weights w on the probability
simplex minimise  w^T A w - 2 lam * sum_t w_t * min_k A[t, k], found by projected gradient
descent from the uniform weights; the update direction is w^T G.
"""

from __future__ import annotations

import torch


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a vector onto {w : w >= 0, sum w = 1} (sort-based, exact)."""
    u = v.sort(descending=True).values
    excess = u.cumsum(0) - 1.0
    j = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = int((u - excess / j > 0).nonzero().max())  # last index kept positive; index 0 always qualifies
    theta = excess[rho] / (rho + 1)
    return (v - theta).clamp(min=0.0)


def cagrad_weights(gram: torch.Tensor, lam: float = 0.5, steps: int = 250, lr: float = 0.1) -> torch.Tensor:
    """Task weights w (T,) for the Gram matrix (T, T) of the task gradients (solved in float64)."""
    a = gram.detach().double()
    conflict = a.min(dim=1).values
    w = torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=a.dtype, device=a.device)
    for _ in range(steps):
        w = project_simplex(w - lr * (2.0 * a @ w - 2.0 * lam * conflict))
    return w.to(gram.dtype)


def combine(grads: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """One update direction (P,) from the task gradients (T, P); a single task's is returned as is."""
    if grads.shape[0] == 1:
        return grads[0]
    return cagrad_weights(grads @ grads.t(), lam) @ grads
