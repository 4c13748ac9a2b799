"""Data classes mapped to a detector's classes by name: automatic (case-insensitive), class_map, drops, errors
(each with a YOLO and an RT-DETR whose classes are not the data's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import load
from cldyn_plugin_yolo.classes import ClassMapping, match_classes
from cldyn_plugin_yolo.data import read_labels
from yolo_testdata import COCO_LIKE, NAMES

runner = CliRunner()
# M3FD's People, Car, Bus, Motorcycle, Lamp, Truck onto person, car, bus, truck, dog.
AUTOMATIC = (None, 1, 2, None, None, 3)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "det.yaml"
    path.write_text(f"names: {NAMES}\nimgsz: 64\n{text}")
    return path


def test_automatic_case_insensitive_mapping_warns_once(coco_like_pt: Path, tmp_path: Path, capsys) -> None:
    backend = load(TaskOptions(weights=coco_like_pt, config=_config(tmp_path, "")))
    assert backend.names == COCO_LIKE
    assert backend.detector.classes == ClassMapping(tuple(NAMES), AUTOMATIC)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1
    assert warning[0].startswith(f"warning: {coco_like_pt.name} has no class People, Motorcycle, Lamp: ")


def test_class_map_wins_and_leaves_the_rest_automatic(coco_like_pt: Path, tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, "class_map: {People: person, Motorcycle: dog, Car: truck}\n")
    backend = load(TaskOptions(weights=coco_like_pt, config=config))
    assert backend.detector.classes.ids == (0, 3, 2, 4, None, 3)  # Car -> truck, as the map says
    assert backend.detector.classes.detector_classes == [0, 2, 3, 4]
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "has no class Lamp:" in warning[0]


def test_nothing_dropped_means_no_warning(coco_like_pt: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "det.yaml"
    path.write_text("names: [Car, PERSON]\n")
    assert load(TaskOptions(weights=coco_like_pt, config=path)).detector.classes.ids == (1, 0)
    assert capsys.readouterr().err == ""


def test_labels_become_detector_classes(coco_like_pt: Path, m3fd: Path, tmp_path: Path) -> None:
    backend = load(TaskOptions(weights=coco_like_pt, config=_config(tmp_path, "")))
    data = backend.dataset(m3fd, "train")
    table = {k: v for k, v in enumerate(AUTOMATIC) if v is not None}
    for i, pair in enumerate(data.pairs):
        raw = read_labels(m3fd / "labels" / "train" / f"{pair.name}.txt", len(NAMES))
        kept = [row for row in raw if int(row[0]) in table]
        expected = np.array([[table[int(row[0])], *row[1:]] for row in kept], dtype=np.float32).reshape(-1, 5)
        assert np.array_equal(data.labels[i], expected)
    assert sum(len(labels) for labels in data.labels) > 0  # the scenes do hold mapped classes
    batch = backend.collate([data[i] for i in range(len(data))])
    loss = backend.loss(batch.vis, batch.targets)  # detector class numbers: the criterion takes them
    assert torch.isfinite(loss)


def test_evaluation_scores_only_mapped_classes(coco_like_pt: Path, tmp_path: Path) -> None:
    backend = load(TaskOptions(weights=coco_like_pt, config=_config(tmp_path, "")))
    targets = {"batch_idx": torch.zeros(2), "cls": torch.tensor([[1.0], [3.0]]),
               "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.3, 0.2]])}
    assert backend.scorer().validator.args.classes == [1, 2, 3]  # detections of person, dog are not scored
    result = backend.evaluate([(torch.rand(1, 3, 64, 64), targets)])
    assert {key.split("/", 1)[1] for key in result if "/" in key} == {"car", "truck"}  # the classes with boxes


@pytest.mark.parametrize("text, message", [
    ("class_map: {Pedestrian: person}\n", "class_map names data class 'Pedestrian', which is not one of the data's"),
    ("class_map: {People: human}\n", "class_map maps to 'human', which coco-like-.*.pt does not detect"),
    ("class_map: [People, person]\n", "class_map in .* must map data class names to detector class names"),
])
def test_class_map_mistakes_are_one_line(coco_like_pt: Path, tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load(TaskOptions(weights=coco_like_pt, config=_config(tmp_path, text)))
    assert "\n" not in str(info.value)


def test_unmappable_classes_exit_2_with_one_line(coco_like_pt: Path, m3fd: Path, tmp_path: Path) -> None:
    config = tmp_path / "det.yaml"
    config.write_text("names: [tree, house]\n")
    result = runner.invoke(create_app(), ["eval", "--task", "det", "--data", str(m3fd), str(m3fd / "vi" / "test"),
                                          "--task-weights", str(coco_like_pt), "--task-config", str(config),
                                          "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"none of the data's classes (tree, house) is a class of {coco_like_pt.name}" in lines[0]


def test_match_classes_prefers_exact_names() -> None:
    mapping = match_classes(["car", "Car"], ["Car", "car"], {}, "d.pt")
    assert mapping.ids == (1, 0)  # exact spelling first, case-insensitive only where there is none
