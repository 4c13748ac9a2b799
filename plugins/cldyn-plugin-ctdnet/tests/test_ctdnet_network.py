"""CTDNet-18: structure, names (the authors' and CLDyN's), output shapes, determinism."""

import torch

from cldyn_plugin_ctdnet.network import CTDNetConfig, build_net, preprocess


def test_outputs_are_logits_at_input_resolution() -> None:
    net = build_net(CTDNetConfig()).eval()
    x = preprocess(torch.rand(2, 3, 64, 64), 64)
    with torch.no_grad():
        out = net(x, with_aux=True)
        plain = net(x)
    assert out.saliency.shape == out.edge.shape == (2, 1, 64, 64)
    assert len(out.aux) == 4 and all(a.shape == (2, 1, 64, 64) for a in out.aux)
    assert plain.aux == () and torch.equal(plain.saliency, out.saliency)
    assert out.saliency.min() < 0 < out.saliency.max()  # logits, not probabilities


def test_non_square_and_odd_inputs() -> None:
    net = build_net(CTDNetConfig()).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 72, 100))
    assert out.saliency.shape == (1, 1, 72, 100)


def test_module_names_follow_the_authors() -> None:
    net = build_net(CTDNetConfig())
    names = dict(net.named_modules())
    for name in ("fuse23.bn_2", "fuse23.conv_atten", "fuse12.down", "fuse12.mul.bn_2", "path1_1", "path2.conv_atten",
                 "path3", "fuse1_1", "fuse1_2", "fuse3", "head_1", "head_edge", "head_5", "bkbone.layer4.1.bn2"):
        assert name in names, name
    keys = net.state_dict().keys()
    assert "bkbone.layer1.0.conv1.weight" in keys and "bkbone.layer2.0.downsample.0.weight" in keys
    assert not any(k.startswith("bkbone.fc") for k in keys)
    params = sum(p.numel() for p in net.parameters())
    assert 11.7e6 < params < 11.9e6  # the paper: CTDNet-18 has 11.82M parameters


def test_seeded_build_is_repeatable_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b = build_net(CTDNetConfig(seed=1)), build_net(CTDNetConfig(seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_net(CTDNetConfig(seed=2))
    assert not torch.equal(a.head_1.weight, c.head_1.weight)


def test_preprocess_resizes_and_normalises_differentiably() -> None:
    rgb = torch.rand(1, 3, 80, 96, requires_grad=True)
    x = preprocess(rgb, 64)
    assert x.shape == (1, 3, 64, 64)
    x.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    gray = preprocess(torch.full((1, 1, 64, 64), 124.55 / 255), 64)
    assert gray.shape == (1, 3, 64, 64) and abs(gray[0, 0].mean().item()) < 1e-4
