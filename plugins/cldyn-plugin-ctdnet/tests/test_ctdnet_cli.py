"""The CLI: `cldyn plugins` lists sod, `cldyn ctdnet train` (+ exact resume), and the closed loop
end to end: `cldyn compensate --plugin ctdnet`, `cldyn fuse --task sod`, `cldyn eval --task sod`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cldyn_cli import plugins
from cldyn_cli.checkpoint import train_state_path
from cldyn_cli.cli import create_app
from cldyn_cli.models.loading import load_vfn
from cldyn_plugin_ctdnet.training import TrainConfig, train_ctdnet
from ctdnet_testdata import save_png

app = create_app()

runner = CliRunner()
TRAIN = ["--steps", "4", "--batch-size", "2", "--size", "64", "--checkpoint-every", "2", "--seed", "1",
         "--device", "cpu", "--quiet"]


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_plugins_lists_sod() -> None:
    plugins.reset()
    try:
        listed = json.loads(invoke("plugins", "--json"))
    finally:
        plugins.reset()
    ours = [p for p in listed if p["name"] == "ctdnet"]
    assert ours and ours[0]["tasks"] == ["sod"] and ours[0]["error"] is None
    assert ours[0]["package"] == "cldyn-plugin-ctdnet"


@pytest.fixture(scope="module")
def trained(vt5000: Path, base_vfn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cldyn ctdnet train` for four steps on base-fused 64x64 images."""
    out = tmp_path_factory.mktemp("train") / "ctdnet.safetensors"
    invoke("ctdnet", "train", vt5000, "-o", out, "--fused-with", base_vfn, *TRAIN)
    return out


def test_train_writes_a_loadable_checkpoint(trained: Path) -> None:
    from cldyn_cli.tasks import TaskOptions

    backend = plugins.get_task("sod").load(TaskOptions(weights=trained))
    assert backend.size == 64
    assert train_state_path(trained).exists()


def test_killed_run_resumes_to_identical_weights(trained: Path, vt5000: Path, base_vfn: Path,
                                                 tmp_path: Path) -> None:
    config = TrainConfig(size=64, batch_size=2, steps=4, seed=1, checkpoint_every=2, backbone_lr_scale=1.0)
    out = tmp_path / "b.safetensors"

    def kill_at_3(step: int, total: int, loss: float, lr: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ctdnet(vt5000, out, config, torch.device("cpu"), base=load_vfn(base_vfn)[0], on_step=kill_at_3)
    assert train_state_path(out).exists()  # saved at step 2
    invoke("ctdnet", "train", vt5000, "-o", out, "--fused-with", base_vfn, *TRAIN, "--resume", "--workers", "2")
    straight, resumed = load_file(str(trained)), load_file(str(out))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_train_errors(vt5000: Path, base_vfn: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ctdnet", "train", str(vt5000), "-o", str(tmp_path / "x.safetensors"), *TRAIN,
                                 "--resume", "--fused-with", str(base_vfn)])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["ctdnet", "train", str(tmp_path / "none"), "-o", str(tmp_path / "x.safetensors"),
                                 *TRAIN, "--inputs", "rgb"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_closed_loop_end_to_end(trained: Path, vt5000: Path, base_vfn: Path, tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text("embed_dim: 32\nvectors: 8\n")
    rsc = tmp_path / "rsc.safetensors"
    invoke("compensate", "--plugin", "ctdnet", "--data", vt5000, "--task-weights", trained, "--steps", "2",
           "--batch-size", "2", "--config", tmp_path / "small.yaml", "--base", base_vfn, "-o", rsc,
           "--device", "cpu", "--quiet")
    test = vt5000 / "Test"
    invoke("fuse", test / "T", test / "RGB", "-o", tmp_path / "comp", "--task", "sod", "--rsc", rsc,
           "--task-weights", trained, "--device", "cpu", "--quiet")
    invoke("fuse", test / "T", test / "RGB", "-o", tmp_path / "base", "--base", base_vfn, "--device", "cpu",
           "--quiet")
    assert sorted(p.name for p in (tmp_path / "comp").iterdir()) == sorted(p.name for p in (test / "RGB").iterdir())
    output = invoke("eval", "--task", "sod", "--data", vt5000, tmp_path / "base", tmp_path / "comp",
                    "--task-weights", trained, "--json", tmp_path / "m.json", "--device", "cpu", "--quiet")
    assert "maxF" in output and "MAE" in output
    doc = json.loads((tmp_path / "m.json").read_text())
    assert set(doc["methods"]) == {"base", "comp"}  # labelled by folder name when those differ
    for scores in doc["methods"].values():
        assert scores["images"] == len(list((test / "RGB").iterdir()))
        assert set(scores["metrics"]) == {"maxF", "meanF", "adpF", "maxE", "meanE", "adpE", "Sm", "MAE"}


def test_eval_names_missing_fused_images(trained: Path, vt5000: Path, tmp_path: Path) -> None:
    (tmp_path / "fused").mkdir()
    save_png(tmp_path / "fused" / "other.png", np.zeros((8, 8, 3), np.uint8))
    result = runner.invoke(app, ["eval", "--task", "sod", "--data", str(vt5000), str(tmp_path / "fused"),
                                 "--task-weights", str(trained), "--quiet", "--device", "cpu"])
    assert result.exit_code == 2 and "unmatched file names" in result.output, result.output
