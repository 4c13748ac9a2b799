"""Loading (YAML and .pt), features, and the loss's gradient path of the det backend, for YOLO and RT-DETR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import YoloBackend, load
from yolo_testdata import NAMES, TINY_RTDETR_YAML, TINY_YAML, Family


def _targets() -> dict[str, torch.Tensor]:
    return {"batch_idx": torch.tensor([0.0, 1.0, 1.0]), "cls": torch.tensor([[1.0], [0.0], [5.0]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.1, 0.3], [0.7, 0.4, 0.3, 0.2]])}


def test_load_yaml_builds_frozen_detector(family: Family, task_config: Path) -> None:
    backend = load(TaskOptions(weights=family.yaml, config=task_config))
    assert isinstance(backend, YoloBackend) and backend.name == "det"
    assert backend.names == NAMES and backend.imgsz == 64
    assert backend.detector.rtdetr == (family.name == "rtdetr")
    assert backend.feature_layer == family.feature_layer  # the neck output feeding the head's stride-32 branch
    assert not backend.model.training
    assert not any(p.requires_grad for p in backend.model.parameters())
    # Seeded: two loads give the same untrained network.
    again = load(TaskOptions(weights=family.yaml, config=task_config))
    for a, b in zip(backend.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_default_layer_of_packaged_yamls() -> None:
    from cldyn_plugin_yolo.loading import default_feature_layer, load_detector

    assert default_feature_layer(load_detector(Path("yolov8n.yaml"), None).model) == "model.21"
    assert default_feature_layer(load_detector(Path("yolov5nu.yaml"), None).model) == "model.23"
    rtdetr = load_detector(Path("rtdetr-l.yaml"), None)  # the published layout, untrained
    assert rtdetr.rtdetr and default_feature_layer(rtdetr.model) == "model.27"


def test_load_pt_saved_the_ultralytics_way(family: Family, family_pt: Path, task_config: Path) -> None:
    import cldyn_plugin_yolo._env  # noqa: F401  (ultralytics set up by the conftest)
    from ultralytics.nn.tasks import torch_safe_load

    backend = load(TaskOptions(weights=family_pt, config=task_config))
    assert backend.names == NAMES and backend.feature_layer == family.feature_layer
    assert backend.detector.rtdetr == (family.name == "rtdetr")
    saved = torch_safe_load(str(family_pt), safe_only=True)[0]["model"].float().state_dict()
    for key, value in backend.model.state_dict().items():
        assert torch.allclose(value.float(), saved[key].float()), key
    # Without --task-config the checkpoint's own names are used, and imgsz falls back to 640.
    plain = load(TaskOptions(weights=family_pt))
    assert plain.names == NAMES and plain.imgsz == 640


def test_features_shape_and_custom_layer(family: Family, family_pt: Path, task_config: Path) -> None:
    backend = load(TaskOptions(weights=family_pt, config=task_config))
    fused = torch.rand(2, 3, 64, 64)
    assert backend.features(fused).shape == (2, *family.feature_shape)  # stride 32 on 64x64
    # Any other size is letterboxed to 64 inside the backend first.
    assert backend.features(torch.rand(1, 3, 48, 100)).shape == (1, *family.feature_shape)
    other = load(TaskOptions(weights=family_pt, config=task_config, feature_layer=family.inner_layer))
    assert other.features(fused).shape == (2, *family.inner_shape)
    with pytest.raises(UserError, match="model.99"):
        load(TaskOptions(weights=family_pt, config=task_config, feature_layer="model.99"))


def test_loss_gradient_reaches_image_not_weights(family: Family, family_pt: Path, task_config: Path) -> None:
    backend = load(TaskOptions(weights=family_pt, config=task_config))
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    fused = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = backend.loss(fused, _targets())
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    assert all(p.grad is None for p in backend.model.parameters())
    after = backend.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched: eval mode
    # Same criterion as Ultralytics' own validation loss on this batch: YOLO's box, cls, dfl per image
    # (its total is that times the batch size); RT-DETR's total, already a mean over the boxes.
    with torch.no_grad():
        total, items = backend.model.loss({"img": fused.detach(), **_targets()})
    expected = total if family.name == "rtdetr" else items.sum() if torch.is_tensor(items) else sum(items.values())
    assert torch.isclose(loss.detach(), expected, rtol=1e-4)


def test_loss_on_other_sizes_moves_boxes(family_pt: Path, task_config: Path) -> None:
    backend = load(TaskOptions(weights=family_pt, config=task_config))
    fused = torch.rand(1, 3, 32, 64, requires_grad=True)  # letterboxed to 64x64 inside the loss
    targets = {"batch_idx": torch.zeros(1), "cls": torch.ones(1, 1), "bboxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}
    backend.loss(fused, targets).backward()
    assert fused.grad.abs().sum() > 0


def test_load_errors(tmp_path: Path, tiny_pt: Path) -> None:
    with pytest.raises(UserError, match="missing.pt.*do not exist"):
        load(TaskOptions(weights=tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="corrupt.pt is not a loadable Ultralytics checkpoint") as info:
        load(TaskOptions(weights=corrupt))
    assert "\n" not in str(info.value)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_pt.read_bytes()[:2000])
    with pytest.raises(UserError, match="truncated.pt is not a loadable"):
        load(TaskOptions(weights=truncated))
    with pytest.raises(UserError, match=r"\.onnx.*\.pt checkpoint or a model \.yaml"):
        load(TaskOptions(weights=tmp_path / "model.onnx"))
    with pytest.raises(UserError, match="nope.yaml"):
        load(TaskOptions(weights=tmp_path / "nope.yaml"))
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("nc: 2\n")
    with pytest.raises(UserError, match="nc=2 but .* detects 6"):
        load(TaskOptions(weights=tiny_pt, config=bad_config))
    from ultralytics import YOLO

    inconsistent = YOLO(str(TINY_YAML), task="detect")
    inconsistent.model.names = {0: "a", 1: "b"}
    inconsistent.save(str(tmp_path / "inconsistent.pt"))
    with pytest.raises(UserError, match="inconsistent.pt names 2 classes but its head detects 6"):
        load(TaskOptions(weights=tmp_path / "inconsistent.pt"))
    rect = tmp_path / "rect.yaml"
    rect.write_text("rect: true\n")
    with pytest.raises(UserError, match="rect: true in .*rect.yaml does not apply to RT-DETR tiny-rtdetr.yaml"):
        load(TaskOptions(weights=TINY_RTDETR_YAML, config=rect))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("nc: 6\nimg_size: 64\n")
    with pytest.raises(UserError, match="unknown key.*img_size"):
        load(TaskOptions(weights=tiny_pt, config=unknown))


def test_ultralytics_data_yaml_as_task_config(tmp_path: Path) -> None:
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: /somewhere\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n")
    backend = load(TaskOptions(weights=TINY_YAML, config=data_yaml))
    assert backend.names == ["a", "b"] and backend.model.model[-1].nc == 2


def test_classification_checkpoint_is_refused(tmp_path: Path) -> None:
    import cldyn_plugin_yolo._env  # noqa: F401
    from ultralytics import YOLO

    path = tmp_path / "cls.pt"
    YOLO("yolov8n-cls.yaml", task="classify").save(str(path))
    with pytest.raises(UserError, match="classify model .*not an Ultralytics detection model"):
        load(TaskOptions(weights=path))
