"""PySODMetrics readings on hand-made cases, and the backend's evaluate."""

import math

import numpy as np
import torch

from cldyn_cli.tasks import TaskOptions
from cldyn_plugin_ctdnet.backend import load
from cldyn_plugin_ctdnet.metrics import METRICS, SodMetrics


def square(h: int = 32, w: int = 40) -> np.ndarray:
    gt = np.zeros((h, w), np.uint8)
    gt[8:20, 10:30] = 255
    return gt


def test_perfect_prediction() -> None:
    metrics = SodMetrics()
    metrics.step(square(), square())
    r = metrics.results()
    assert tuple(r) == METRICS
    assert r["MAE"] == 0.0
    assert math.isclose(r["maxF"], 1.0) and math.isclose(r["adpF"], 1.0)
    assert math.isclose(r["Sm"], 1.0) and r["meanF"] > 0.99  # meanF counts the ">= 0" threshold too
    assert abs(r["maxE"] - 1.0) < 2e-3  # PySODMetrics' E-measure is a hair above 1 on a perfect map


def test_inverted_prediction_scores_badly() -> None:
    metrics = SodMetrics()
    metrics.step(255 - square(), square())
    r = metrics.results()
    assert r["MAE"] == 1.0 and r["adpF"] == 0.0 and r["Sm"] < 0.2


def test_beta_squared_is_0_3() -> None:
    pred = np.zeros((10, 10), np.uint8)
    pred[:, :5] = 255  # half the image predicted salient
    gt = np.zeros((10, 10), np.uint8)
    gt[:, :2] = 255  # precision 0.4, recall 1
    metrics = SodMetrics()
    metrics.step(pred, gt)
    expected = 1.3 * 0.4 * 1.0 / (0.3 * 0.4 + 1.0)
    assert math.isclose(metrics.results()["maxF"], expected, rel_tol=1e-6)


def test_empty_is_nan() -> None:
    assert all(math.isnan(v) for v in SodMetrics().results().values())


def test_backend_evaluate_compares_at_mask_size(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("size: 64\n")
    backend = load(TaskOptions(config=tmp_path / "c.yaml"))
    masks = torch.from_numpy(square()).float()[None, None] / 255
    r = backend.evaluate([(torch.rand(1, 3, 32, 40), {"mask": masks})] * 2)
    assert set(r) == set(METRICS) and 0.0 <= r["MAE"] <= 1.0
