"""mAP through Ultralytics' NMS and metrics on hand-made predictions whose answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cldyn_cli.tasks import TaskOptions

from cldyn_plugin_yolo.backend import load
from cldyn_plugin_yolo.evaluation import DetectionScorer
from yolo_testdata import NAMES

SIZE = (64, 64)
# Ground truth of two images (normalised cx cy w h): image 0 has a car and a person, image 1 a bus.
TARGETS = {"batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[1.0], [0.0], [2.0]]),
           "bboxes": torch.tensor([[0.3, 0.3, 0.25, 0.2], [0.7, 0.6, 0.1, 0.3], [0.5, 0.5, 0.5, 0.4]])}


def raw_predictions(classes: list[int], score: float = 0.9, anchors: int = 20) -> torch.Tensor:
    """What the Detect head returns in eval mode, (B, 4 + nc, anchors): pixel xywh then class scores;
    the ground-truth boxes with ``classes`` as predicted classes, every other anchor empty."""
    out = torch.zeros(2, 4 + len(NAMES), anchors)
    out[:, :4] = torch.tensor([32.0, 32.0, 4.0, 4.0])[:, None]  # a dummy box where nothing is predicted
    slot = [0, 0]
    for k, (b, box) in enumerate(zip(TARGETS["batch_idx"].long(), TARGETS["bboxes"])):
        j = slot[b]
        slot[b] += 1
        out[b, :4, j] = box * torch.tensor([SIZE[1], SIZE[0]] * 2)
        out[b, 4 + classes[k], j] = score
    return out


# Ultralytics integrates the interpolated precision-recall curve at 101 recall points with the
# trapezoid rule, and its curve drops to 0 at recall 1: a perfect detector scores 0.995, not 1.
PERFECT = 0.995


def test_perfect_predictions_score_one() -> None:
    scorer = DetectionScorer(NAMES)
    scorer.add(raw_predictions([1, 0, 2]), TARGETS, SIZE)
    result = scorer.results()
    assert result["mAP50"] == pytest.approx(PERFECT) and result["mAP50-95"] == pytest.approx(PERFECT)
    for key in ("AP50/Car", "AP50-95/People", "AP50/Bus"):
        assert result[key] == pytest.approx(PERFECT)
    assert "AP50/Truck" not in result  # no ground truth, no AP
    assert math.isclose(result["precision"], 1.0, abs_tol=1e-3) and math.isclose(result["recall"], 1.0, abs_tol=1e-3)


def test_wrong_class_scores_zero() -> None:
    scorer = DetectionScorer(NAMES)
    scorer.add(raw_predictions([3, 4, 5]), TARGETS, SIZE)  # right boxes, wrong classes
    result = scorer.results()
    assert result["mAP50"] == 0.0 and result["mAP50-95"] == 0.0 and result["AP50/Car"] == 0.0


def test_one_wrong_class_of_three() -> None:
    scorer = DetectionScorer(NAMES)
    scorer.add(raw_predictions([1, 0, 5]), TARGETS, SIZE)  # the bus is called a truck
    result = scorer.results()
    assert result["AP50/Car"] == pytest.approx(PERFECT) and result["AP50/People"] == pytest.approx(PERFECT)
    assert result["AP50/Bus"] == 0.0
    assert result["mAP50"] == pytest.approx(2 / 3 * PERFECT)


def test_backend_evaluate_runs_the_network(tiny_pt: Path, task_config: Path) -> None:
    backend = load(TaskOptions(weights=tiny_pt, config=task_config))
    result = backend.evaluate([(torch.rand(2, 3, 64, 64), TARGETS), (torch.rand(1, 3, 32, 64), {
        "batch_idx": torch.zeros(1), "cls": torch.ones(1, 1), "bboxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])})])
    assert {"mAP50", "mAP50-95", "AP50/Car", "AP50-95/Bus"} <= set(result)
    assert all(0.0 <= v <= 1.0 for v in result.values())
