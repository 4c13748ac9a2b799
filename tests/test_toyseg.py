"""The built-in reference task "toyseg" and the shared task helpers it uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cldyn_cli import plugins
from cldyn_cli.builtin_tasks.toyseg import (ToySegConfig, confusion_matrix, save_toyseg, segmentation_scores,
                                            train_toyseg)
from cldyn_cli.data.synth import CLASSES, write_dataset
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions

NUM_CLASSES = len(CLASSES)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from threads, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fmb(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmb")
    write_dataset(root, n=6, width=48, height=32, seed=0, layout="fmb")
    return root


def load(**options) -> object:
    return plugins.get_task("toyseg").load(TaskOptions(**options))


def first_batch(backend, root: Path):
    data = backend.dataset(root, "train")
    return backend.collate([data[i] for i in range(len(data))])


def test_loss_gradient_reaches_the_image_and_not_the_network():
    backend = load()
    fused = torch.rand(2, 3, 20, 30, requires_grad=True)
    targets = torch.randint(0, 3, (2, 20, 30))
    targets[:, :5] = 255
    backend.loss(fused, targets).backward()
    assert fused.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in backend.net.parameters())


def test_features_tap_the_named_layer():
    assert load().features(torch.rand(2, 3, 20, 30)).shape == (2, 32, 10, 15)
    assert load(feature_layer="stem").features(torch.rand(1, 3, 8, 8)).shape == (1, 16, 8, 8)
    with pytest.raises(UserError, match=r"layer 'midd' not found in ToySegNet \(similar: mid.*--feature-layer"):
        load(feature_layer="midd")


def test_miou_on_a_hand_made_confusion():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(pred, target, num_classes=4)  # class 3 absent from both: not averaged
    assert confusion[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]] and confusion.sum() == 5
    scores = segmentation_scores(confusion)
    # IoU: class 0 = 1/(2+2-1), class 1 = 2/(2+3-2), class 2 = 0/(1+0-0)
    assert scores["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert scores["pixel_acc"] == pytest.approx(3 / 5)


def test_dataset_reads_the_fmb_layout(fmb, tmp_path):
    batch = first_batch(load(), fmb)
    assert batch.ir.shape == (5, 1, 32, 48) and batch.vis.shape == (5, 3, 32, 48)
    assert batch.targets.dtype == torch.long and int(batch.targets.max()) < NUM_CLASSES
    assert batch.names == ["00000", "00002", "00003", "00004", "00005"]
    with pytest.raises(UserError, match="has no val/ folder"):
        load().dataset(fmb, "val")
    bad = tmp_path / "bad"
    write_dataset(bad, n=1, width=32, height=32, seed=0, layout="fmb")
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(bad / "train" / "Label" / "00000.png")
    with pytest.raises(UserError, match="class indices 0..14"):
        load().dataset(bad, "train")[0]


def test_training_lowers_the_loss_and_weights_round_trip(fmb, tmp_path):
    config = ToySegConfig(num_classes=NUM_CLASSES)
    yaml_config = tmp_path / "toyseg.yaml"
    yaml_config.write_text(f"num_classes: {NUM_CLASSES}\n")
    untrained = load(config=yaml_config)
    batch = first_batch(untrained, fmb)
    state = train_toyseg(fmb, steps=25, seed=0, config=config)
    weights = tmp_path / "toyseg.safetensors"
    save_toyseg(state, weights, config)
    trained = load(weights=weights)
    before, after = untrained.loss(batch.vis, batch.targets), trained.loss(batch.vis, batch.targets)
    assert after < 0.8 * before
    metrics = trained.evaluate([(batch.vis, batch.targets)])
    assert set(metrics) == {"mIoU", "pixel_acc"} and metrics["pixel_acc"] > 0.5


def test_training_repeats_exactly(fmb):
    first, second = (train_toyseg(fmb, steps=2, seed=3, config=ToySegConfig(num_classes=NUM_CLASSES)) for _ in range(2))
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not both"):
        load(weights=tmp_path / "w.safetensors", config=tmp_path / "c.yaml")
    with pytest.raises(UserError, match="does not exist"):
        load(weights=tmp_path / "missing.safetensors")
    config = tmp_path / "c.yaml"
    config.write_text("classes: 3\n")
    with pytest.raises(UserError, match="unknown key"):
        load(config=config)


def test_module_main_writes_weights_the_task_loads(tmp_path: Path) -> None:
    from cldyn_cli.builtin_tasks.toyseg import load_toyseg, main
    from cldyn_cli.data.synth import write_dataset
    from cldyn_cli.tasks import TaskOptions

    write_dataset(tmp_path / "fmb", n=6, width=32, height=32, seed=0, layout="fmb")
    main([str(tmp_path / "fmb"), str(tmp_path / "seg.safetensors"), "2"])
    assert load_toyseg(TaskOptions(weights=tmp_path / "seg.safetensors")).num_classes == 7
    with pytest.raises(SystemExit, match="usage"):
        main([])


def test_width_and_depth_shape_the_network_and_travel_with_its_weights(tmp_path: Path) -> None:
    """depth adds middle convolutions dilated 2, 4, 8; the saved config rebuilds the same network."""
    from cldyn_cli.builtin_tasks.toyseg import build_net

    config = ToySegConfig(num_classes=NUM_CLASSES, width=8, depth=3)
    net = build_net(config)
    convs = [m for m in net.mid if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation for c in convs] == [(2, 2), (4, 4), (8, 8)]
    assert [c.in_channels for c in convs] == [8, 16, 16] and net.head.in_channels == 16
    assert net(torch.rand(1, 3, 20, 30)).shape == (1, NUM_CLASSES, 20, 30)
    save_toyseg(net.state_dict(), tmp_path / "deep.safetensors", config)
    loaded = load(weights=tmp_path / "deep.safetensors")
    image = torch.rand(1, 3, 24, 24)
    assert torch.equal(loaded.net(image), net(image))
    assert loaded.features(image).shape == (1, 16, 12, 12)  # "mid" is the last dilated convolution's output
    yaml_config = tmp_path / "deep.yaml"
    yaml_config.write_text("width: 8\ndepth: 2\n")
    assert len(load(config=yaml_config).net.mid) == 4
