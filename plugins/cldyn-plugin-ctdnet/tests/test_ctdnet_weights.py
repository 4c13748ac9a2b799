"""Loading: our checkpoints, the authors' .pth state dicts, ImageNet backbones, and clear refusals."""

from pathlib import Path

import pytest
import torch

from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions
from cldyn_plugin_ctdnet.backend import load
from cldyn_plugin_ctdnet.network import CTDNetConfig, build_net
from cldyn_plugin_ctdnet.weights import load_backbone, save_ctdnet


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    net = build_net(CTDNetConfig(seed=5))
    save_ctdnet(net, tmp_path / "c.safetensors", CTDNetConfig(size=64, seed=5), {"steps": 0})
    backend = load(TaskOptions(weights=tmp_path / "c.safetensors"))
    assert backend.size == 64 and same_weights(backend.net, net)
    assert backend.feature_layer == "fuse23.bn_2"
    assert all(not p.requires_grad for p in backend.net.parameters()) and not backend.net.training
    (tmp_path / "big.yaml").write_text("size: 96\n")  # --task-config overrides the size only
    assert load(TaskOptions(weights=tmp_path / "c.safetensors", config=tmp_path / "big.yaml")).size == 96


def test_authors_state_dict_loads(tmp_path: Path) -> None:
    net = build_net(CTDNetConfig(seed=2))
    state = {f"module.{k}": (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "model-40")  # DataParallel prefix, apex O2 float16, no suffix
    backend = load(TaskOptions(weights=tmp_path / "model-40"))
    assert backend.size == 352
    assert torch.allclose(backend.net.head_1.weight, net.head_1.weight, atol=1e-2)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "wrapped.pth")
    assert same_weights(load(TaskOptions(weights=tmp_path / "wrapped.pth")).net, net)


def test_features_are_the_batch_norm_output(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("size: 64\n")
    backend = load(TaskOptions(config=tmp_path / "c.yaml"))
    feats = backend.features(torch.rand(2, 3, 80, 80))
    assert feats.shape == (2, 64, 16, 16)
    assert feats.min() < 0  # before the ReLU: nothing ran in place over the captured tensor
    after = load(TaskOptions(config=tmp_path / "c.yaml", feature_layer="fuse23")).features(torch.rand(1, 3, 64, 64))
    assert after.min() >= 0


def test_backbone_weights(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    imagenet = resnet18(weights=None).state_dict()  # what resnet18-5c106cde.pth holds (with fc)
    torch.save(imagenet, tmp_path / "resnet18.pth")
    net = build_net(CTDNetConfig())
    load_backbone(net, tmp_path / "resnet18.pth")
    assert torch.equal(net.bkbone.layer3[0].conv1.weight,
                       imagenet["layer3.0.conv1.weight"])
    with pytest.raises(UserError, match="only a ResNet backbone"):
        load(TaskOptions(weights=tmp_path / "resnet18.pth"))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not a ResNet-18"):
        load_backbone(net, tmp_path / "bad.pth")


@pytest.mark.parametrize("content, match", [
    (b"garbage", "cannot read CTDNet weights"),
    (None, "does not exist"),
])
def test_unusable_weights(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "w.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        load(TaskOptions(weights=path))


def test_foreign_and_partial_files(tmp_path: Path) -> None:
    torch.save({"fuse23.conv_1.weight": torch.zeros(64, 64, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="does not fit CTDNet-18"):
        load(TaskOptions(weights=tmp_path / "partial.pth"))
    from cldyn_cli.models.loading import save_vfn
    from cldyn_cli.models.vfn import VFN, VFNConfig

    save_vfn(VFN(VFNConfig(blocks=1)), tmp_path / "vfn.safetensors", {})
    with pytest.raises(UserError, match="expected 'cldyn.ctdnet'"):
        load(TaskOptions(weights=tmp_path / "vfn.safetensors"))


def test_config_and_layer_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("size: 16\n")
    with pytest.raises(UserError, match="at least 32"):
        load(TaskOptions(config=tmp_path / "a.yaml"))
    (tmp_path / "b.yaml").write_text("sise: 64\n")
    with pytest.raises(UserError, match="unknown key"):
        load(TaskOptions(config=tmp_path / "b.yaml"))
    with pytest.raises(UserError, match="fuse23.bn_2"):
        load(TaskOptions(feature_layer="fuse23.bn2"))
