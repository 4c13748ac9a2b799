"""The plugin through the cldyn CLI: listing, compensate + fuse + eval --task end to end, and mmseg train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cldyn_plugin_mmseg
from cldyn_cli import plugins
from cldyn_cli.models.loading import embedded_base_path, save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig

runner = CliRunner()


def _app():
    from cldyn_cli.cli import create_app
    app = create_app()

    return app


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CLDYN_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="module")
def base_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``--base`` with a small random base network unless the shipped one exists."""
    if embedded_base_path().is_file():
        return []
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_vfn(VFN(VFNConfig(blocks=2)), path, {"note": "random, for tests"})
    return ["--base", str(path)]


def test_plugins_json_lists_seg(fresh_plugins) -> None:
    result = runner.invoke(_app(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["mmseg"]["tasks"] == ["seg"] and listed["mmseg"]["error"] is None
    assert listed["mmseg"]["package"] == "cldyn-plugin-mmseg"
    assert plugins.get_task("mmseg").name == "seg"


def test_compensate_fuse_and_eval_end_to_end(fresh_plugins, fmb: Path, tiny_pth: Path, base_args: list[str],
                                             tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("embed_dim: 32\nvectors: 8\nbatch_size: 2\n")
    rsc = tmp_path / "rsc.safetensors"
    result = runner.invoke(_app(), ["compensate", "--plugin", "mmseg", "--data", str(fmb), "--task-weights",
                                    str(tiny_pth), "--config", str(config), "--steps", "2", "--device", "cpu",
                                    "--quiet", "-o", str(rsc), *base_args])
    assert result.exit_code == 0, result.output
    assert rsc.is_file()
    log = (tmp_path / "rsc.log.csv").read_text().splitlines()
    assert log[0].startswith("step,task") and len(log) == 3 and log[1].split(",")[1] == "seg"

    fused = tmp_path / "fused"
    result = runner.invoke(_app(), ["fuse", str(fmb / "test" / "Infrared"), str(fmb / "test" / "Visible"),
                                    "-o", str(fused), "--task", "seg", "--rsc", str(rsc), "--task-weights",
                                    str(tiny_pth), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in fused.iterdir()] == ["00001.png"]

    base = tmp_path / "base"
    result = runner.invoke(_app(), ["fuse", str(fmb / "test" / "Infrared"), str(fmb / "test" / "Visible"),
                                    "-o", str(base), "--device", "cpu", "--quiet", *base_args])
    assert result.exit_code == 0, result.output
    report = tmp_path / "metrics.json"
    result = runner.invoke(_app(), ["eval", "--task", "seg", "--data", str(fmb), "--split", "test", str(base),
                                    str(fused), "--task-weights", str(tiny_pth), "--json", str(report), "--device",
                                    "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert [r["images"] for r in doc["methods"].values()] == [1, 1] and list(doc["methods"]) == ["base", "fused"]
    assert {"mIoU", "mAcc", "aAcc", "IoU.car"} <= set(doc["methods"]["fused"]["metrics"])
    assert "mIoU" in result.stdout


def test_mmseg_train_writes_a_loadable_checkpoint(fresh_plugins, fmb: Path, tiny_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.pth"
    result = runner.invoke(_app(), ["mmseg", "train", str(fmb), "-o", str(out), "--task-config", str(tiny_yaml),
                                    "--steps", "2", "--batch-size", "2", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    from cldyn_cli.tasks import TaskOptions
    from cldyn_plugin_mmseg.backend import load

    backend = load(TaskOptions(weights=out))
    assert backend.size == (64, 64) and backend.classes[2] == "car"
    recorded = torch.load(out, weights_only=True)["meta"]["cldyn_plugin_mmseg"]["plugins"]
    assert recorded["mmseg"] == f"cldyn-plugin-mmseg {cldyn_plugin_mmseg.__version__}"  # the run's plugins


def test_cli_user_errors(fresh_plugins, fmb: Path, tmp_path: Path, base_args: list[str], tiny_pth: Path) -> None:
    result = runner.invoke(_app(), ["compensate", "--plugin", "seg", "--data", str(fmb), "--task-weights",
                                    str(tmp_path / "gone.pth"), "--steps", "1", "--device", "cpu", "--quiet",
                                    "-o", str(tmp_path / "rsc.safetensors"), *base_args])
    assert result.exit_code == 2
    assert "gone.pth do not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(_app(), ["eval", "--task", "seg", "--data", str(tmp_path / "nodata"), str(tmp_path),
                                    "--task-weights", str(tiny_pth), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "nodata does not exist" in result.output
    result = runner.invoke(_app(), ["mmseg", "train", str(fmb), "-o", str(tmp_path / "x.onnx"), "--quiet"])
    assert result.exit_code == 2 and "must end in .pth" in result.output
