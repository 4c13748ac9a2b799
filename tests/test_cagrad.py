"""CAGrad weights against optima solved by hand, and the simplex projection."""

from __future__ import annotations

import pytest
import torch

from cldyn_cli.training.cagrad import cagrad_weights, combine, conflict_averse_weights, project_simplex

# Two tasks, A = [[a, c], [c, b]], m_t = min_k A[t, k], w = (p, 1 - p):
#   f(p) = a p^2 + 2 c p (1 - p) + b (1 - p)^2 - 2 lam (p m1 + (1 - p) m2)
#   f'(p) = 2 (a + b - 2c) p - 2 (b - c) - 2 lam (m1 - m2) = 0
#   => p* = (b - c + lam (m1 - m2)) / (a + b - 2c), clipped to [0, 1] (f is convex when a + b > 2c).
# A = [[4, -1], [-1, 2]]: m1 = m2 = -1, p* = (2 + 1) / (4 + 2 + 2) = 3/8, whatever lam.
# A = [[1, 1.5], [1.5, 4]]: m1 = 1, m2 = 1.5, a + b - 2c = 2;
#   lam = 2:   p* = (2.5 + 2 * (-0.5)) / 2 = 0.75;   lam = 0.5: p* = (2.5 - 0.25) / 2 = 1.125 -> 1.
CASES = [
    ([[4.0, -1.0], [-1.0, 2.0]], 0.5, [0.375, 0.625]),
    ([[1.0, 1.5], [1.5, 4.0]], 2.0, [0.75, 0.25]),
    ([[1.0, 1.5], [1.5, 4.0]], 0.5, [1.0, 0.0]),
]


@pytest.mark.parametrize("gram, lam, expected", CASES)
def test_two_task_weights_match_the_hand_solved_optimum(gram: list, lam: float, expected: list) -> None:
    w = cagrad_weights(torch.tensor(gram), lam)
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-5, rtol=0)


def test_combine_is_the_weighted_sum_of_gradients() -> None:
    # Gradients whose Gram matrix is the first case: [[4, -1], [-1, 2]].
    grads = torch.tensor([[2.0, 0.0, 0.0], [-0.5, 1.3228757, 0.0]])
    torch.testing.assert_close(combine(grads, 0.5), 0.375 * grads[0] + 0.625 * grads[1], atol=1e-5, rtol=0)


def test_one_task_is_the_identity() -> None:
    grads = torch.randn(1, 10)
    assert torch.equal(combine(grads, 0.5), grads[0])


@pytest.mark.parametrize("v, expected", [
    ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),  # already on the simplex
    ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
    ([2.0, 0.0, -1.0], [1.0, 0.0, 0.0]),
    ([0.5, 0.4, -3.0], [0.55, 0.45, 0.0]),
])
def test_simplex_projection(v: list, expected: list) -> None:
    torch.testing.assert_close(project_simplex(torch.tensor(v)), torch.tensor(expected), atol=1e-6, rtol=0)


def test_projection_is_the_nearest_simplex_point() -> None:
    torch.manual_seed(0)
    v = torch.randn(5) * 3
    p = project_simplex(v)
    assert p.min() >= 0 and abs(float(p.sum()) - 1) < 1e-6
    others = torch.distributions.Dirichlet(torch.ones(5)).sample((2000,))
    assert float((p - v).norm()) <= float((others - v).norm(dim=1).min()) + 1e-6


# --- Liu et al.'s CAGrad (solver "cagrad") ---

def test_cagrad_of_equal_orthogonal_gradients_is_the_scaled_mean() -> None:
    # By symmetry w = (1/2, 1/2), so g_w = g0 and d = (1 + c) g0 / (1 + c^2): 1.5 / 1.25 = 1.2 for c = 0.5.
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(combine(grads, 0.5, "cagrad"), torch.tensor([0.6, 0.6]), atol=1e-5, rtol=0)


def test_cagrad_with_c_zero_is_gradient_descent_on_the_mean() -> None:
    grads = torch.tensor([[3.0, 1.0, 0.0], [-1.0, 2.0, 0.5], [0.2, -0.3, 1.0]])
    torch.testing.assert_close(combine(grads, 0.0, "cagrad"), grads.mean(0), atol=1e-6, rtol=0)


def test_cagrad_weights_match_a_general_solver() -> None:
    from scipy.optimize import minimize

    torch.manual_seed(3)
    grads = torch.randn(3, 20, dtype=torch.float64) * torch.tensor([[5.0], [1.0], [0.2]], dtype=torch.float64)
    gram = (grads @ grads.t()).numpy()
    b = [1 / 3] * 3
    g0 = (gram @ b @ b) ** 0.5
    c = 0.5
    res = minimize(lambda w: w @ gram @ b + c * g0 * max(w @ gram @ w, 0) ** 0.5, b, method="SLSQP",
                   bounds=[(0, 1)] * 3, constraints={"type": "eq", "fun": lambda w: w.sum() - 1}, tol=1e-12)
    ours = conflict_averse_weights(grads @ grads.t(), c)
    value = lambda w: float(w @ gram @ b + c * g0 * (w @ gram @ w) ** 0.5)  # noqa: E731
    assert value(ours.numpy()) <= value(res.x) + 1e-6 * abs(value(res.x))


def test_cagrad_does_not_bounce_to_one_task_when_gradients_are_large() -> None:
    # The authors' solver with step 0.1 jumps to a simplex corner once |g| is large; CAGrad keeps both tasks improving.
    grads = torch.tensor([[30.0, 0.0], [-10.0, 20.0]])
    d = combine(grads, 0.5, "cagrad")
    assert float(grads[0] @ d) > 0 and float(grads[1] @ d) > 0


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown solver"):
        combine(torch.randn(2, 3), 0.5, "adam")
