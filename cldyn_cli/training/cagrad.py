"""Combinations of per-task gradients: the authors' min-norm solver and CAGrad (Liu et al., 2021).

``authors`` (what the authors' code calls CAGrad): with G the T x P matrix of task gradients and
A = G G^T, the weights w on the probability simplex minimise  w^T A w - 2 lam * sum_t w_t * min_k A[t, k],
found by projected gradient descent from the uniform weights; the update direction is w^T G.

``cagrad`` (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent"): with g0 the mean gradient
and c = lam, w minimises  g_w . g0 + c |g0| |g_w|  over the simplex (g_w = w^T G), and the direction
is  (g0 + c |g0| / |g_w| g_w) / (1 + c^2), the rescaling of the authors' reference code. It keeps the
average loss decreasing while raising the worst task's improvement, instead of jumping between
simplex corners as the min-norm solve does when gradients are large.
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


def conflict_averse_weights(gram: torch.Tensor, c: float = 0.5, steps: int = 500) -> torch.Tensor:
    """Liu et al.'s w (T,): argmin over the simplex of  w^T A b + c sqrt(b^T A b) sqrt(w^T A w), b uniform.

    The objective is convex; it is made scale-free by dividing A by |g0|^2 = b^T A b and solved by
    projected gradient descent with a backtracking step (ill-conditioned A is the common case),
    in float64.
    """
    a = gram.detach().double()
    t = a.shape[0]
    b = torch.full((t,), 1.0 / t, dtype=a.dtype, device=a.device)
    g0_sq = b @ a @ b
    if g0_sq <= 0:
        return b.to(gram.dtype)
    a = a / g0_sq

    def objective(w: torch.Tensor) -> torch.Tensor:
        return w @ a @ b + c * (w @ a @ w).clamp(min=0).sqrt()

    w, value, step = b, objective(b), 1.0
    for _ in range(steps):
        grad = a @ b + c * (a @ w) / (w @ a @ w).clamp(min=1e-20).sqrt()
        while step > 1e-12:
            candidate = project_simplex(w - step * grad)
            candidate_value = objective(candidate)
            if candidate_value < value:
                break
            step /= 2
        else:
            break  # no descent step left: converged
        if value - candidate_value < 1e-15:
            w, value = candidate, candidate_value
            break
        w, value, step = candidate, candidate_value, step * 2
    return w.to(gram.dtype)


def conflict_averse(grads: torch.Tensor, c: float = 0.5) -> torch.Tensor:
    """Liu et al.'s CAGrad direction (P,) from the task gradients (T, P)."""
    w = conflict_averse_weights(grads @ grads.t(), c)
    g0 = grads.mean(0)
    gw = w @ grads
    gw_norm = gw.norm()
    if gw_norm == 0:
        return g0 / (1 + c * c)
    return (g0 + c * g0.norm() / gw_norm * gw) / (1 + c * c)


SOLVERS = ("authors", "cagrad")


def combine(grads: torch.Tensor, lam: float = 0.5, solver: str = "authors") -> torch.Tensor:
    """One update direction (P,) from the task gradients (T, P); a single task's is returned as is."""
    if grads.shape[0] == 1:
        return grads[0]
    if solver == "cagrad":
        return conflict_averse(grads, lam)
    if solver != "authors":
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    return cagrad_weights(grads @ grads.t(), lam) @ grads
