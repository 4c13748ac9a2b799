"""The CTDNet loss, edge targets, and the frozen backend's gradients."""

import torch

from cldyn_cli.tasks import TaskOptions
from cldyn_plugin_ctdnet.backend import load
from cldyn_plugin_ctdnet.loss import ctdnet_loss, mask_edges, structure_loss
from cldyn_plugin_ctdnet.network import CTDNetOutput


def test_edges_of_a_hand_made_mask() -> None:
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    edge = mask_edges(mask)
    expected = torch.zeros(8, 8)
    expected[1:7, 1:7] = 1.0  # dilation: one pixel out
    expected[3:5, 3:5] = 0.0  # erosion: one pixel in
    assert torch.equal(edge, expected)
    assert mask_edges(torch.ones(1, 1, 8, 8)).sum() == 0  # the image border is not an edge
    assert mask_edges(torch.zeros(2, 1, 8, 8)).sum() == 0
    soft = mask * 0.8  # soft masks binarise at 0.5
    assert torch.equal(mask_edges(soft), expected)


def test_structure_loss_prefers_the_right_answer() -> None:
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    good = structure_loss((mask * 2 - 1) * 20, mask)
    bad = structure_loss((1 - mask * 2) * 20, mask)
    assert good < 0.01 < 1.0 < bad


def test_full_loss_weights_and_gradient_to_the_image(tmp_path) -> None:
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:40, 20:44] = 1
    edge = mask_edges(mask)
    (tmp_path / "small.yaml").write_text("size: 64\n")
    backend = load(TaskOptions(config=tmp_path / "small.yaml"))
    assert backend.size == 64
    fused = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = backend.loss(fused, {"mask": mask, "edge": edge})
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in backend.net.parameters())
    assert not backend.net.training
    # without an edge target the edge map is derived from the mask: same value
    assert torch.allclose(backend.loss(fused.detach(), {"mask": mask}), loss.detach())


def test_loss_combination() -> None:
    z = torch.zeros(1, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = CTDNetOutput(z, z, (z, z, z, z))
    s = structure_loss(z, mask)
    edge_bce = torch.nn.functional.binary_cross_entropy_with_logits(z, mask_edges(mask))
    expected = s * (1 + 1 / 2 + 1 / 4 + 1 / 8 + 1 / 16) + edge_bce
    assert torch.allclose(ctdnet_loss(out, mask, mask_edges(mask)), expected)
