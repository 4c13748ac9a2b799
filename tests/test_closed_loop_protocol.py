"""The closed-loop protocol script (benchmarks/closed_loop.py): its summary arithmetic, and one tiny
run end to end with the built-in toyseg task (the real runs stay outside CI)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def protocol():
    spec = importlib.util.spec_from_file_location("closed_loop_protocol", ROOT / "benchmarks" / "closed_loop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_summary_counts_wins_in_each_metric_direction() -> None:
    cl = protocol()
    own = [({"maxF": 0.5, "MAE": 0.2}, {"maxF": 0.6, "MAE": 0.1}),  # better in both
           ({"maxF": 0.5, "MAE": 0.2}, {"maxF": 0.4, "MAE": 0.3}),  # worse in both
           ({"maxF": 0.5, "MAE": 0.2}, {"maxF": 0.5, "MAE": 0.1})]  # a tie is no win
    fusion = ({m: 1.0 for m in cl.FUSION_METRICS.split(",")},) * 2
    results = [{"task": pair, "cross": {}, "fusion": fusion} for pair in own]
    args = Namespace(vary="compensation", set=[], quick=True)
    doc = cl.collect("sod", [0, 1, 2], results, [], cl.QUICK["sod"], args, 1.0, 2.0)
    assert doc["base"]["maxF"] == [0.5, 0.5, 0.5] and doc["compensated"]["maxF"] == [0.6, 0.4, 0.5]
    assert doc["compensated_wins"] == {"maxF": 1, "MAE": 2}
    assert doc["summary"]["compensated"]["maxF"]["mean"] == pytest.approx(0.5)
    assert doc["summary"]["compensated"]["maxF"]["std"] == pytest.approx(0.1)
    assert "meanF" not in doc["base"]  # metrics a task did not report are left out


def test_settings_become_a_compensate_config(tmp_path: Path) -> None:
    path = protocol().compensation_config(tmp_path / "c.yaml", ["query=learned", "tau_end=0.1"])
    assert path.read_text() == "query: learned\ntau_end: 0.1\n"


def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "benchmarks/closed_loop.py", "--task", "seg", "--quick", "--seeds", "1",
                             "--work", str(tmp_path / "w"), "--size", "scenes=6", "--size", "size=48x32",
                             "--size", "epochs=1", "--size", "steps=1", "--threads", "1", "--set", "query=no_decay",
                             "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["task"] == "seg" and doc["seeds"] == [0] and doc["settings"] == ["query=no_decay"]
    assert doc["cross_models"] == [] and doc["reused"] is False
    assert set(doc["base"]) == set(doc["compensated"]) == {"mIoU", "pixel_acc"}
    assert len(doc["base"]["mIoU"]) == 1 and 0 <= doc["compensated"]["mIoU"][0] <= 1
    assert set(doc["fusion"]["compensated"]) == set(protocol().FUSION_METRICS.split(","))
    assert doc["task_network"][0]["useful"] is False  # one toyseg step is no useful segmenter, and it says so
    assert "WARNING" in result.stderr
    assert "query: no_decay" in (tmp_path / "w" / "runs" / "default" / "compensate.yaml").read_text()


class _NoRuns:
    """A runner that fails the test if the protocol tries to make scenes or networks again."""

    device = "cpu"

    def cldyn(self, *args, name: str) -> None:
        raise AssertionError(f"ran {name}")


def test_variants_of_the_compensation_steps_share_scenes_and_networks(tmp_path: Path) -> None:
    cl = protocol()
    made = cl.replace(cl.QUICK["det"], steps=240, batch=8)
    data = {"root": str(tmp_path), "test_ir": "ir", "test_vis": "vi", "split": "test", "base_test": "b",
            "weights": "w.pt", "cross": {}}
    (tmp_path / "prepared.json").write_text(json.dumps({"sizes": cl.data_sizes(made), "cross_models": [],
                                                        "data": data}))
    reused = cl.Det(_NoRuns(), cl.QUICK["det"], []).prepare(tmp_path, 0)
    assert reused.weights == Path("w.pt") and reused.root == tmp_path
    with pytest.raises(AssertionError, match="ran synth"):  # other scenes: made again
        cl.Det(_NoRuns(), cl.replace(cl.QUICK["det"], scenes=50), []).prepare(tmp_path, 0)


def test_ablation_row_reports_steps_wins_and_the_largest_fusion_change() -> None:
    spec = importlib.util.spec_from_file_location("closed_loop_table", ROOT / "benchmarks" / "closed_loop_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    doc = {"base": {"mAP50": [0.5, 0.5]}, "compensated": {"mAP50": [0.52, 0.49]}, "settings": ["tau_end=0.05"],
           "sizes": {"steps": 240, "batch": 4}, "compensated_wins": {"mAP50": 1},
           "fusion": {"base": {"SD": [50.0, 50.0], "Qabf": [0.5, 0.5]},
                      "compensated": {"SD": [48.0, 48.0], "Qabf": [0.51, 0.51]}}}
    row = table.ablation_table([("tau", doc)]).splitlines()[-1]
    assert row.startswith("| tau | tau_end=0.05 | 240 x 4 | mAP50 | 0.5000 ± 0.0000 | 0.5050 ± 0.0212 |")
    assert row.endswith("| +0.0200, -0.0100 | 1/2 | SD -4.0% |")


class _Recorder:
    """A runner that records the `cldyn` commands the protocol would run."""

    device = "cpu"

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def cldyn(self, *args, name: str) -> None:
        self.commands.append([str(a) for a in args])


def test_segformer_trains_at_the_scene_size_with_its_own_plugin(tmp_path: Path) -> None:
    cl = protocol()
    runner = _Recorder()
    task = cl.SegFormer(runner, cl.replace(cl.QUICK["seg"], size="128x96", epochs=7), [])
    weights = task.train(tmp_path / "scenes", {"train": tmp_path / "base-train"}, tmp_path / "task", 3, None)
    assert weights == tmp_path / "task.pth" and task.plugin == "mmseg"
    (command,) = runner.commands
    assert command[:3] == ["mmseg", "train", str(tmp_path / "scenes")]
    options = dict(zip(command[3::2], command[4::2]))
    assert options["--images"] == str(tmp_path / "base-train") and options["--steps"] == "70"
    assert options["--seed"] == "3" and options["-o"] == str(weights)
    config = yaml.safe_load(Path(options["--task-config"]).read_text())
    assert config["size"] == [96, 128]  # height, width of the scenes
    assert (config["mit_width"], config["mit_blocks"]) == (cl.SEGFORMER["width"], cl.SEGFORMER["blocks"])


def test_networks_of_another_segmenter_are_not_reused(tmp_path: Path) -> None:
    cl = protocol()
    data = {"root": str(tmp_path), "test_ir": "ir", "test_vis": "vi", "split": "test", "base_test": "b",
            "weights": "w.safetensors", "cross": {}}
    (tmp_path / "prepared.json").write_text(json.dumps({"sizes": cl.data_sizes(cl.QUICK["seg"]), "cross_models": [],
                                                        "plugin": "toyseg", "data": data}))
    assert cl.Seg(_NoRuns(), cl.QUICK["seg"], []).prepare(tmp_path, 0).weights == Path("w.safetensors")
    with pytest.raises(AssertionError, match="ran synth"):  # a toyseg is no SegFormer: made again
        cl.SegFormer(_NoRuns(), cl.QUICK["seg"], []).prepare(tmp_path, 0)


@pytest.mark.parametrize("argv, message", [
    (["--task", "det", "--segmenter", "segformer"], "--segmenter applies to --task seg only, not det"),
    (["--task", "sod", "--cross", "yolo11n.yaml"], "--cross applies to --task det only, not sod"),
    (["--task", "det", "--size", "epoch=5"], "--size 'epoch=5': expected KEY=VALUE with KEY one of scenes, size"),
    (["--task", "det", "--size", "steps=many"], "--size 'steps=many': 'many' is not a valid steps"),
    (["--task", "det", "--cross", "rt.yaml@yolo11n,yolo11n.yaml"], "list the cross detector yolo11n before it"),
    (["--task", "det", "--cross", "yolo11n.yaml", "--cross-epochs", "rt=5"],
     "--cross-epochs 'rt=5': expected LABEL=N with LABEL one of the --cross detectors (yolo11n)"),
])
def test_options_that_do_not_apply_are_refused(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        protocol().main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


class _Scorer(_Recorder):
    """A recording runner whose scores are the same for every folder."""

    def task_scores(self, task, data, split, weights, folders, out):
        self.commands.append(["eval", "--task", task, str(weights)])
        return {folder.name: {"mAP50": 0.5} for folder in folders}

    def fusion_scores(self, ir, vis, folders, out):
        return {folder.name: {"VIF": 0.7} for folder in folders}


def _prepared_det(cl, work: Path, cross: list[str]) -> None:
    """A det work folder as an earlier run leaves it, with a trained YOLO11n and the ``cross`` labels recorded."""
    data = {"root": str(work), "test_ir": "ir", "test_vis": "vi", "split": "test", "base_test": "b",
            "weights": "w.pt", "cross": {label: str(work / f"cross-{label}.pt") for label in cross}}
    (work / "prepared.json").write_text(json.dumps({"sizes": cl.data_sizes(cl.QUICK["det"]), "data": data}))
    (work / "cross-yolo11n.pt").write_bytes(b"trained before")
    (work / "yolo-data").mkdir()
    (work / "yolo-data" / "data.yaml").write_text("names: [People, Car]\n")


def test_a_cross_detector_added_later_is_trained_alone_from_an_earlier_one(tmp_path: Path) -> None:
    cl = protocol()
    _prepared_det(cl, tmp_path, ["yolo11n"])
    runner = _Scorer()
    prepared = cl.Det(runner, cl.QUICK["det"], ["yolo11n.yaml", "rt.yaml@yolo11n"]).prepare(tmp_path, 0)
    train, score = runner.commands
    assert train[:2] == ["yolo", "train"] and train[train.index("--model") + 1] == "rt.yaml"
    assert train[train.index("--set") + 1] == f"pretrained={tmp_path / 'cross-yolo11n.pt'}"
    assert score == ["eval", "--task", "det", str(tmp_path / "cross-rt.pt")]
    assert prepared.cross == {"yolo11n": tmp_path / "cross-yolo11n.pt", "rt": tmp_path / "cross-rt.pt"}
    assert set(json.loads((tmp_path / "prepared.json").read_text())["data"]["cross"]) == {"yolo11n", "rt"}
    only = cl.Det(_NoRuns(), cl.QUICK["det"], ["yolo11n.yaml"]).prepare(tmp_path, 0)
    assert set(only.cross) == {"yolo11n"}  # the result holds the requested networks only


def test_reuse_scores_an_earlier_compensation_without_redoing_it(tmp_path: Path) -> None:
    cl = protocol()
    base, comp = tmp_path / "base-test", tmp_path / "runs" / "comp-1"
    for folder in (base, comp):
        folder.mkdir(parents=True)
        (folder / "00001.png").write_bytes(b"")
    (tmp_path / "runs" / "rsc-1.safetensors").write_bytes(b"")
    data = cl.TaskData(tmp_path, tmp_path / "ir", tmp_path / "vi", "test", base, tmp_path / "w.pt",
                       {"rt": tmp_path / "rt.pt"})
    runner = _Scorer()
    task = cl.Det(runner, cl.QUICK["det"], [])
    result = cl.run_seed(task, data, tmp_path / "runs", 1, tmp_path / "c.yaml", reuse=True)
    assert [c[0] for c in runner.commands] == ["eval", "eval"]  # scores only: no compensate, no fuse
    assert result["cross"]["rt"] == ({"mAP50": 0.5}, {"mAP50": 0.5})
    (comp / "00001.png").unlink()  # an incomplete fusion is made again
    cl.run_seed(task, data, tmp_path / "runs", 1, tmp_path / "c.yaml", reuse=True)
    assert [c[0] for c in runner.commands[2:]] == ["fuse", "eval", "eval"]


def test_a_later_run_adds_logs_instead_of_overwriting_them(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("001-compensate-0.log", "002-fuse-comp-0.log"):
        (logs / name).write_text("earlier run\n")
    protocol().Runner(logs, tmp_path / "yolo", 1, "cpu").cldyn("plugins", name="plugins")
    assert (logs / "001-compensate-0.log").read_text() == "earlier run\n"
    assert "cldyn_cli plugins" in (logs / "003-plugins.log").read_text()


def test_a_cross_detector_trained_for_other_epochs_is_trained_again_beside_the_first(tmp_path: Path) -> None:
    cl = protocol()
    _prepared_det(cl, tmp_path, ["yolo11n", "rt"])
    runner = _Scorer()
    models = ["yolo11n.yaml", "rt.yaml@yolo11n"]
    prepared = cl.Det(runner, cl.QUICK["det"], models, {"rt": 60}).prepare(tmp_path, 0)
    train, _ = runner.commands
    assert train[train.index("--epochs") + 1] == "60"
    assert train[train.index("-o") + 1] == str(tmp_path / "cross-rt-e60.pt")  # beside the one of the usual epochs
    assert train[train.index("--set") + 1] == f"pretrained={tmp_path / 'cross-yolo11n.pt'}"
    assert prepared.cross["rt"] == tmp_path / "cross-rt-e60.pt"
    again = cl.Det(_NoRuns(), cl.QUICK["det"], models, {"rt": 60}).prepare(tmp_path, 0)  # recorded: reused
    assert again.cross["rt"] == tmp_path / "cross-rt-e60.pt"
