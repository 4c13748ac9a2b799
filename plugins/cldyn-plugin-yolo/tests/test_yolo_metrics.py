"""mAP through Ultralytics' post-processing and metrics on hand-made predictions whose answer is known,
in both output forms: YOLO's raw Detect output (NMS) and RT-DETR's ranked detections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import load
from cldyn_plugin_yolo.evaluation import DetectionScorer
from yolo_testdata import NAMES

SIZE = (48, 64)  # (height, width): not square, so a box scaled along the wrong axis would not match
# Ground truth of two images (normalised cx cy w h): image 0 has a car and a person, image 1 a bus.
TARGETS = {"batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[1.0], [0.0], [2.0]]),
           "bboxes": torch.tensor([[0.3, 0.3, 0.25, 0.2], [0.7, 0.6, 0.1, 0.3], [0.5, 0.5, 0.5, 0.4]])}
FAMILIES = ["yolo", "rtdetr"]


def predictions(family: str, classes: list[int], score: float = 0.9, extra: int = 0, slots: int = 20) -> torch.Tensor:
    """The ground-truth boxes with ``classes`` as predicted classes, as the detector's head returns them in
    eval mode; ``extra`` more confident (0.95) Truck boxes per image where there is no object.

    YOLO: (B, 4 + nc, anchors), pixel ``cx cy w h`` then class scores, unused anchors empty.
    RT-DETR: (B, k, 6), normalised ``cx cy w h``, score, class, ranked by score, the rest at score 0."""
    boxes: list[list[tuple[torch.Tensor, int, float]]] = [[], []]
    for b in range(2):
        boxes[b] += [(torch.tensor([0.1 + 0.05 * j, 0.9, 0.05, 0.05]), 5, 0.95) for j in range(extra)]
    for k, (b, box) in enumerate(zip(TARGETS["batch_idx"].long(), TARGETS["bboxes"])):
        boxes[b].append((box, classes[k], score))
    scale = torch.tensor([SIZE[1], SIZE[0]] * 2, dtype=torch.float32)
    if family == "yolo":
        out = torch.zeros(2, 4 + len(NAMES), slots)
        out[:, :4] = torch.tensor([32.0, 24.0, 4.0, 4.0])[:, None]  # a dummy box where nothing is predicted
        for b, found in enumerate(boxes):
            for j, (box, cls, conf) in enumerate(found):
                out[b, :4, j] = box * scale
                out[b, 4 + cls, j] = conf
        return out
    out = torch.zeros(2, slots, 6)
    out[:, :, :4] = torch.tensor([0.5, 0.5, 0.05, 0.05])
    for b, found in enumerate(boxes):
        for j, (box, cls, conf) in enumerate(sorted(found, key=lambda item: -item[2])):
            out[b, j] = torch.cat([box, torch.tensor([conf, float(cls)])])
    return out


def score(family: str, predicted: list[int], extra: int = 0, **scorer: object) -> dict[str, float]:
    """Metrics of :func:`predictions` from a scorer made with ``scorer`` (max_det, classes, ...)."""
    metrics = DetectionScorer(NAMES, rtdetr=family == "rtdetr", **scorer)  # type: ignore[arg-type]
    metrics.add(predictions(family, predicted, extra=extra), TARGETS, SIZE)
    return metrics.results()


# Ultralytics integrates the interpolated precision-recall curve at 101 recall points with the
# trapezoid rule, and its curve drops to 0 at recall 1: a perfect detector scores 0.995, not 1.
PERFECT = 0.995


@pytest.mark.parametrize("family", FAMILIES)
def test_perfect_predictions_score_one(family: str) -> None:
    result = score(family, [1, 0, 2])
    assert result["mAP50"] == pytest.approx(PERFECT) and result["mAP50-95"] == pytest.approx(PERFECT)
    for key in ("AP50/Car", "AP50-95/People", "AP50/Bus"):
        assert result[key] == pytest.approx(PERFECT)
    assert "AP50/Truck" not in result  # no ground truth, no AP
    assert math.isclose(result["precision"], 1.0, abs_tol=1e-3) and math.isclose(result["recall"], 1.0, abs_tol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_class_scores_zero(family: str) -> None:
    result = score(family, [3, 4, 5])  # right boxes, wrong classes
    assert result["mAP50"] == 0.0 and result["mAP50-95"] == 0.0 and result["AP50/Car"] == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_one_wrong_class_of_three(family: str) -> None:
    result = score(family, [1, 0, 5])  # the bus is called a truck
    assert result["AP50/Car"] == pytest.approx(PERFECT) and result["AP50/People"] == pytest.approx(PERFECT)
    assert result["AP50/Bus"] == 0.0
    assert result["mAP50"] == pytest.approx(2 / 3 * PERFECT)


@pytest.mark.parametrize("family", FAMILIES)
def test_classes_filter_keeps_other_classes_out(family: str) -> None:
    # Two confident Truck boxes per image fill max_det=2: the real detections of image 0 are cut off...
    crowded = score(family, [1, 0, 2], extra=2, max_det=2)
    assert crowded["AP50/Car"] == 0.0 and crowded["AP50/People"] == 0.0
    # ...unless only the classes the data labels are kept (what a class mapping asks for).
    kept = score(family, [1, 0, 2], extra=2, max_det=2, classes=[0, 1, 2])
    assert kept["mAP50"] == pytest.approx(PERFECT)


def test_backend_evaluate_runs_the_network(family_pt: Path, task_config: Path) -> None:
    backend = load(TaskOptions(weights=family_pt, config=task_config))
    result = backend.evaluate([(torch.rand(2, 3, 64, 64), TARGETS), (torch.rand(1, 3, 32, 64), {
        "batch_idx": torch.zeros(1), "cls": torch.ones(1, 1), "bboxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])})])
    assert {"mAP50", "mAP50-95", "AP50/Car", "AP50-95/Bus"} <= set(result)
    assert all(0.0 <= v <= 1.0 for v in result.values())


def test_rtdetr_detections_are_ultralytics_predictions(tiny_rtdetr_pt: Path, task_config: Path) -> None:
    """The scorer's RT-DETR detections are what Ultralytics' own RT-DETR predictor finds in the same image."""
    from ultralytics import RTDETR

    backend = load(TaskOptions(weights=tiny_rtdetr_pt, config=task_config))
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # not square: x and y scale apart
    with torch.no_grad():
        ours = backend.scorer().detections(backend.model(images), (64, 96))[0]
    theirs = RTDETR(str(tiny_rtdetr_pt)).predict(images, conf=backend.detector.conf, verbose=False)[0].boxes
    assert len(ours["conf"]) == len(theirs.conf) > 0
    assert torch.allclose(ours["bboxes"], theirs.xyxy, atol=1e-3)
    assert torch.equal(ours["cls"], theirs.cls) and torch.allclose(ours["conf"], theirs.conf)
