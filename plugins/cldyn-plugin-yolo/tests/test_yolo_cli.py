"""The plugin through the cldyn CLI: listing, compensate + fuse + eval --task end to end (conditioned on a
YOLO or an RT-DETR, scored by both), and yolo train (YOLO and RT-DETR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cldyn_cli import plugins
from cldyn_cli.models.loading import embedded_base_path, save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig

from yolo_testdata import FAMILIES, NAMES, TINY_YAML, Family

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


def test_plugins_json_lists_det(fresh_plugins) -> None:
    result = runner.invoke(_app(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["yolo"]["tasks"] == ["det"] and listed["yolo"]["error"] is None
    assert listed["yolo"]["package"] == "cldyn-plugin-yolo"
    assert plugins.get_task("yolo").name == "det"


@pytest.fixture(scope="module")
def base_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``--base`` with a small random base network unless the shipped one exists."""
    if embedded_base_path().is_file():
        return []
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_vfn(VFN(VFNConfig(blocks=2)), path, {"note": "random, for tests"})
    return ["--base", str(path)]


def test_compensate_fuse_and_eval_end_to_end(fresh_plugins, family: Family, family_pt: Path, tiny_pt: Path,
                                             tiny_rtdetr_pt: Path, m3fd: Path, task_config: Path,
                                             base_args: list[str], tmp_path: Path) -> None:
    """Compensation conditioned on ``family``'s detector; both detectors score the fused folders
    (cross-detector evaluation: the other one was not involved in training)."""
    config = tmp_path / "compensate.yaml"
    config.write_text("embed_dim: 32\nvectors: 8\nbatch_size: 2\n")
    rsc = tmp_path / "rsc.safetensors"
    result = runner.invoke(_app(), ["compensate", "--plugin", "yolo", "--data", str(m3fd), "--task-weights",
                                    str(family_pt), "--task-config", str(task_config), "--config", str(config),
                                    "--steps", "2", "--device", "cpu", "--quiet", "-o", str(rsc), *base_args])
    assert result.exit_code == 0, result.output
    assert rsc.is_file()
    log = (tmp_path / "rsc.log.csv").read_text().splitlines()
    assert log[0].startswith("step,task") and len(log) == 3 and log[1].split(",")[1] == "det"

    fused = tmp_path / "fused"
    result = runner.invoke(_app(), ["fuse", str(m3fd / "ir" / "test"), str(m3fd / "vi" / "test"), "-o", str(fused),
                                    "--task", "det", "--rsc", str(rsc), "--task-weights", str(family_pt),
                                    "--task-config", str(task_config), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in fused.iterdir()] == ["00001.png"]

    # Base fusion of the same scene, then both folders scored side by side by each detector.
    base_fused = tmp_path / "base"
    result = runner.invoke(_app(), ["fuse", str(m3fd / "ir" / "test"), str(m3fd / "vi" / "test"), "-o",
                                    str(base_fused), "--device", "cpu", "--quiet", *base_args])
    assert result.exit_code == 0, result.output
    for judge in (tiny_pt, tiny_rtdetr_pt):
        report = tmp_path / f"metrics-{judge.stem}.json"
        result = runner.invoke(_app(), ["eval", "--task", "det", "--data", str(m3fd), "--split", "test",
                                        str(base_fused), str(fused), "--task-weights", str(judge), "--task-config",
                                        str(task_config), "--json", str(report), "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output
        doc = json.loads(report.read_text())
        assert doc["task"] == "det" and list(doc["methods"]) == ["base", "fused"]
        for entry in doc["methods"].values():
            assert entry["images"] == 1 and {"mAP50", "mAP50-95"} <= set(entry["metrics"])
        assert "mAP50" in result.stdout


def test_cli_user_errors(fresh_plugins, m3fd: Path, tmp_path: Path, base_args: list[str]) -> None:
    result = runner.invoke(_app(), ["compensate", "--plugin", "det", "--data", str(m3fd), "--task-weights",
                                    str(tmp_path / "gone.pt"), "--steps", "1", "--device", "cpu", "--quiet",
                                    "-o", str(tmp_path / "rsc.safetensors"), *base_args])
    assert result.exit_code == 2
    assert "gone.pt do not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(_app(), ["eval", "--task", "det", "--data", str(tmp_path / "nodata"), str(tmp_path),
                                    "--task-weights", str(TINY_YAML), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "nodata" in result.output and "Traceback" not in result.output
    data = tmp_path / "data.yaml"
    data.write_text("path: /nowhere\ntrain: images\nval: images\nnames: [a]\n")
    for setting, message in (("foo=1", "not an Ultralytics training argument"), ("epochs=3", "use the --epochs"),
                             ("project=x", "sets this itself"), ("lr0", "expected KEY=VALUE")):
        result = runner.invoke(_app(), ["yolo", "train", str(data), "-o", str(tmp_path / "x.pt"), "--set", setting])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(_app(), ["yolo", "train", str(data), "-o", str(tmp_path / "x.pt"), "--epochs", "1",
                                    "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "training failed" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_yolo_train_offline(fresh_plugins, family: Family, m3fd: Path, tmp_path: Path, offline) -> None:
    """Ultralytics' own trainer (its RT-DETR trainer for an RT-DETR YAML), one epoch on five 64x64
    images, without touching the network."""
    import shutil

    root = tmp_path / "yolo"
    for split, src in (("train", "train"), ("val", "test")):
        for kind, folder in (("images", "vi"), ("labels", "labels")):
            shutil.copytree(m3fd / folder / src, root / kind / split)
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {NAMES}\n")
    out = tmp_path / "best.pt"
    result = runner.invoke(_app(), ["yolo", "train", str(data), "-o", str(out), "--model", str(family.yaml),
                                    "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    # The font Ultralytics' dataset check asks for was found locally, so nothing was downloaded.
    assert offline["fonts"] and not offline["downloads"]
    from cldyn_cli.tasks import TaskOptions
    from cldyn_plugin_yolo.backend import load

    backend = load(TaskOptions(weights=out))
    assert backend.names == NAMES and backend.imgsz == 64  # the training imgsz comes with the checkpoint
    assert backend.detector.rtdetr == (family.name == "rtdetr")


def test_command_module_imports_first_without_a_cycle() -> None:
    """Importing the plugin's command module before the cldyn CLI must not break the plugin."""
    import os
    import subprocess
    import sys

    code = ("import cldyn_plugin_yolo.cli\n"
            "from cldyn_cli import plugins\n"
            "print([(p.name, p.error) for p in plugins.list_plugins() if p.name == 'yolo'])\n")
    env = {**os.environ, "CLDYN_PLUGINS": "yolo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[('yolo', None)]" in done.stdout and "failed" not in done.stderr
