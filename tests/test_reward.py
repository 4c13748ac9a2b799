"""The reward-penalty loss on hand-made losses."""

from __future__ import annotations

import pytest
import torch

from cldyn_cli.training.reward import reward_penalty


@pytest.mark.parametrize("comp, base, delta, expected", [
    (1.0, 2.0, 5.0, 1.0),  # better than base: no penalty
    (2.0, 2.0, 5.0, 2.0),  # equal: no penalty
    (3.0, 2.0, 5.0, 8.0),  # worse by 1: 3 + 5 * 1
    (3.0, 2.5, 2.0, 4.0),  # 3 + 2 * 0.5
])
def test_values(comp: float, base: float, delta: float, expected: float) -> None:
    assert float(reward_penalty(torch.tensor(comp), torch.tensor(base), delta)) == pytest.approx(expected)


def test_gradient_flows_through_comp_only() -> None:
    comp = torch.tensor(3.0, requires_grad=True)
    base = torch.tensor(2.0, requires_grad=True)
    reward_penalty(comp, base).backward()
    assert float(comp.grad) == pytest.approx(6.0)  # 1 + delta while worse than base
    assert base.grad is None


def test_accepts_a_float_base() -> None:
    assert float(reward_penalty(torch.tensor(1.5), 1.0)) == pytest.approx(4.0)
