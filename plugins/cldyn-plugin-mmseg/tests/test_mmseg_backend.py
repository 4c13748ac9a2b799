"""The seg backend: loading from MMSeg's shipped configs and checkpoints, features, loss, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions
from cldyn_plugin_mmseg.backend import MMSegBackend, load
from cldyn_plugin_mmseg.config import DEFAULT_CONFIG, resolve, resolve_config_path, shipped_config_dir

from mmseg_testdata import CLASSES


@pytest.fixture(scope="module")
def backend(tiny_yaml: Path) -> MMSegBackend:
    return load(TaskOptions(config=tiny_yaml))


def test_tiny_config_is_derived_from_a_shipped_config(tiny_yaml: Path) -> None:
    resolved = resolve(tiny_yaml, None)
    shipped = resolve_config_path(DEFAULT_CONFIG)
    assert shipped.is_file() and shipped.is_relative_to(shipped_config_dir())
    assert resolved.source == str(shipped)
    model = resolved.cfg.model
    assert model.backbone.type == "MixVisionTransformer" and model.backbone.embed_dims == 16
    assert model.backbone.init_cfg is None  # the shipped config asks for a pretrained download
    assert model.decode_head.num_classes == 7 and model.decode_head.norm_cfg.type == "BN"
    assert resolved.classes == CLASSES and resolved.size == (64, 64)


def test_loads_a_shipped_config_file_directly() -> None:
    """An MMSeg .py config as --task-config: the real MiT-b0 SegFormer, its classes and input size."""
    backend = load(TaskOptions(config=resolve_config_path(DEFAULT_CONFIG)))
    assert type(backend.model.backbone).__name__ == "MixVisionTransformer"
    assert backend.num_classes == 150 and backend.size == (512, 512)
    assert backend.feature_layer == "backbone.layers.3.2"
    assert not any(p.requires_grad for p in backend.model.parameters()) and not backend.model.training
    assert sum(p.numel() for p in backend.model.parameters()) > 3_000_000  # MiT-b0 + head, ~3.7M


def test_features_default_layer_and_aliases(backend: MMSegBackend) -> None:
    fused = torch.rand(2, 3, 64, 64)
    assert backend.feature_layer == "backbone.layers.3.2"
    feats = backend.features(fused)
    assert feats.shape == (2, 2 * 2, 128)  # stage 4 at stride 32: 2x2 tokens of 128 channels
    assert torch.isfinite(feats).all()
    same = load(TaskOptions(config=Path(backend.source), feature_layer="backbone.norm4"))
    assert same.feature_layer == "backbone.layers.3.2"
    other = MMSegBackend(backend.model, _resolved(backend), "decode_head.fusion_conv")
    assert other.features(fused).shape == (2, 64, 16, 16)
    # Another input size is resized to the network's input first: the same feature shape.
    assert backend.features(torch.rand(1, 3, 80, 96)).shape == (1, 4, 128)


def _resolved(backend: MMSegBackend):
    from cldyn_plugin_mmseg.config import Resolved

    return Resolved(cfg=None, classes=backend.classes, size=backend.size)


def test_wrong_feature_layer_is_a_user_error(tiny_yaml: Path) -> None:
    with pytest.raises(UserError, match="backbone.layers.3.2"):
        load(TaskOptions(config=tiny_yaml, feature_layer="backbone.layers.3.9"))
    with pytest.raises(UserError, match="stages 1..4"):
        load(TaskOptions(config=tiny_yaml, feature_layer="backbone.norm5"))


def test_loss_gradient_reaches_the_image_only(backend: MMSegBackend) -> None:
    fused = torch.rand(2, 3, 64, 64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 64, 64))
    targets[:, :4] = 255  # ignored rows
    loss = backend.loss(fused, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    assert all(p.grad is None for p in backend.model.parameters())
    # The decode head's cross-entropy by hand: logits upsampled to the labels, 255 contributing zero;
    # MMSeg's CrossEntropyLoss (avg_non_ignore=False) averages over all pixels.
    with torch.no_grad():
        logits = backend.logits(fused)
        manual = torch.nn.functional.cross_entropy(logits, targets, ignore_index=255, reduction="none").mean()
    assert torch.allclose(loss.detach(), manual, atol=1e-5)


def test_normalisation_matches_mmseg_data_preprocessor(backend: MMSegBackend) -> None:
    """Our torch path == MMSeg's SegDataPreProcessor on the same picture read the OpenCV way (BGR uint8)."""
    rgb8 = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bgr = torch.from_numpy(rgb8[..., ::-1].copy()).permute(2, 0, 1)
    expected = backend.model.data_preprocessor({"inputs": [bgr]}, training=False)["inputs"]
    ours = backend.adapter(torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(ours, expected, atol=1e-4)


def test_checkpoint_round_trip_without_config(tiny_pth: Path, tiny_yaml: Path) -> None:
    """A checkpoint written by `cldyn mmseg train` carries config and classes: --task-weights is enough."""
    loaded = load(TaskOptions(weights=tiny_pth))
    assert loaded.classes == CLASSES and loaded.size == (64, 64)
    state = torch.load(tiny_pth, weights_only=True)["state_dict"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # With the YAML it was trained from as well, the same network.
    again = load(TaskOptions(weights=tiny_pth, config=tiny_yaml))
    fused = torch.rand(1, 3, 64, 64)
    assert torch.equal(again.logits(fused), loaded.logits(fused))


def test_checkpoint_with_other_class_count_is_a_user_error(tiny_pth: Path, tmp_path: Path, tiny_yaml: Path) -> None:
    config = tmp_path / "nine.yaml"
    config.write_text(tiny_yaml.read_text().replace("classes: [background, person, car, bus, motorcycle, lamp, truck]",
                                                    "num_classes: 9"))
    with pytest.raises(UserError, match="do not fit"):
        load(TaskOptions(weights=tiny_pth, config=config))


def test_checkpoints_load_safely(tiny_pth: Path, tmp_path: Path) -> None:
    """Numpy values in meta load; a runner checkpoint's message hub (rebuilt via getattr) and any other
    pickled object are refused with one line, never executed."""
    from mmengine.logging import MessageHub

    ckpt = torch.load(tiny_pth, weights_only=True)
    ckpt["meta"]["palette"] = np.array([[0, 0, 0], [220, 20, 60]], dtype=np.uint8)
    ckpt["meta"]["seed"] = np.int64(3)
    path = tmp_path / "numpy.pth"
    torch.save(ckpt, path)
    assert load(TaskOptions(weights=path)).classes == CLASSES

    hub = MessageHub.get_instance("cldyn-test")
    hub.update_scalar("train/loss", 1.5)
    ckpt["message_hub"] = hub.state_dict()
    torch.save(ckpt, tmp_path / "runner.pth")
    with pytest.raises(UserError, match="not loaded for safety .*HistoryBuffer.*runner checkpoint"):
        load(TaskOptions(weights=tmp_path / "runner.pth"))

    # A config text that would run code when executed is refused, not run.
    marker = tmp_path / "ran"
    ckpt.pop("message_hub")
    ckpt["meta"]["cfg"] = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + ckpt["meta"]["cfg"]
    torch.save(ckpt, tmp_path / "code.pth")
    with pytest.raises(UserError, match="config stored in .* is not read .*line 1"):
        load(TaskOptions(weights=tmp_path / "code.pth"))
    assert not marker.exists()

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state_dict": ckpt["state_dict"], "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="not loaded for safety"):
        load(TaskOptions(weights=tmp_path / "evil.pth"))


def test_config_errors(tmp_path: Path, tiny_yaml: Path) -> None:
    with pytest.raises(UserError, match="do not exist"):
        load(TaskOptions(weights=tmp_path / "gone.pth"))
    with pytest.raises(UserError, match="ships no config"):
        load(TaskOptions(config=Path("mmseg::segformer/nope.py")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("config: mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py\nnum_clases: 3\n")
    with pytest.raises(UserError, match="unknown key"):
        load(TaskOptions(config=bad))
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, bare)
    with pytest.raises(UserError, match="carries no config"):
        load(TaskOptions(weights=bare))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load(TaskOptions(weights=junk))


def test_a_py_config_from_outside_mmseg_runs_only_with_trust(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.py"
    # no import statement: MMEngine would treat the file as a lazy-import config and defer the call
    config.write_text(f"__import__('pathlib').Path({str(marker)!r}).touch()\nmodel = dict()\n")
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load(TaskOptions(config=config))
    assert not marker.exists()
    with pytest.raises(UserError):  # it runs, then holds no segmentor
        load(TaskOptions(config=config, trust=True))
    assert marker.exists()  # the flag is what lets it run


def test_mit_width_scales_encoder_and_head(tmp_path: Path) -> None:
    """mit_width W: stages W..8W with 1..8 heads, a 4W head over all four stages; cfg_options still win."""
    config = tmp_path / "mit.yaml"
    config.write_text(f"config: {DEFAULT_CONFIG}\nnum_classes: 3\nsize: 64\nmit_width: 8\nmit_blocks: 1\n"
                      "cfg_options: {model.decode_head.channels: 24}\n")
    model = resolve(config, None).cfg.model
    assert model.backbone.embed_dims == 8 and model.backbone.num_heads == [1, 2, 4, 8]
    assert model.backbone.num_layers == [1, 1, 1, 1]
    assert model.decode_head.in_channels == [8, 16, 32, 64] and model.decode_head.channels == 24
    built = load(TaskOptions(config=config)).model
    assert [stage[0].projection.out_channels for stage in built.backbone.layers] == [8, 16, 32, 64]


def test_mit_scaling_is_refused_for_other_backbones_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "mit.yaml"
    config.write_text(f"config: {DEFAULT_CONFIG}\nmit_width: 0\n")
    with pytest.raises(UserError, match="'mit_width' in .* must be a positive integer; got 0"):
        resolve(config, None)
    config.write_text("config: mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py\nmit_width: 8\n")
    with pytest.raises(UserError, match="scale a SegFormer's MiT encoder; .* has a ResNetV1c backbone"):
        resolve(config, None)
