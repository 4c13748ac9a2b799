"""What a user sees: defaults in --help, plain progress lines in logs, loss logs, refused overwrites."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.ui import PlainProgress

app = create_app()

runner = CliRunner()


@pytest.mark.parametrize("command, defaults", [
    ("train-base", ["[default: (100)", "[default: (16)", "[default: (256)", "[default: (0.001)", "[default: (4)",
                    "[default: (0)", "[default: (200)", "[default: (OUTPUT with .log.csv)"]),
    ("compensate", ["[default: (50)", "[default: (4)", "[default: (0.01)", "[default: (5.0)", "[default: (0.5)",
                    "[default: (1)", "[default: (fp32)", "[default: (the shipped model)"]),
])
def test_help_shows_every_default_within_80_columns(command: str, defaults: list[str]) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # defaults may wrap
    for default in defaults:
        assert " ".join(default.split()) in text, default
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "<bool>" not in result.output and "--no-resume" not in result.output
    assert "METHOD" not in result.output


def test_plain_progress_prints_first_periodic_and_last_lines(capsys, monkeypatch) -> None:
    clock = iter([0.0, 0.0, 1.0, 5.0, 6.0, 7.0])
    monkeypatch.setattr("cldyn_cli.ui.time.monotonic", lambda: next(clock))
    bar = PlainProgress(interval=4)
    job = bar.add_task("training", total=4, status="")  # t=0
    for step in range(1, 5):  # t=0 (first line), 1 (too soon), 5 (interval passed), 6 (done)
        bar.update(job, completed=step, status=f"loss {step}")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["training: 1/4 (25%), 0:00:00 elapsed, about 0:00:00 left, loss 1",
                     "training: 3/4 (75%), 0:00:05 elapsed, about 0:00:01 left, loss 3",
                     "training: 4/4 (100%), 0:00:06 elapsed, loss 4"]


def test_train_base_logs_losses_prints_plain_progress_and_refuses_to_overwrite(pair_dirs, tmp_path: Path) -> None:
    data, out = pair_dirs[0].parent, tmp_path / "m.safetensors"
    args = ["train-base", str(data), "-o", str(out), "--crop", "32", "--batch-size", "2", "--blocks", "1",
            "--checkpoint-every", "2", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "training: 2/2 (100%)" in result.output  # not a terminal: plain lines, not a bar
    rows = list(csv.DictReader((tmp_path / "m.log.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2"] and all(float(r["loss"]) > 0 for r in rows)
    before = out.read_bytes()
    result = runner.invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 2 and "pass --overwrite" in result.output and str(out) in result.output
    assert out.read_bytes() == before and len((tmp_path / "m.log.csv").read_text().splitlines()) == 3
    result = runner.invoke(app, [*args, "--steps", "4", "--resume", "--quiet"])  # keeps rows 1-2, adds 3-4
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in csv.DictReader((tmp_path / "m.log.csv").open())] == ["1", "2", "3", "4"]
    assert runner.invoke(app, [*args, "--steps", "1", "--overwrite", "--quiet"]).exit_code == 0
    assert [r["step"] for r in csv.DictReader((tmp_path / "m.log.csv").open())] == ["1"]


def test_compensate_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "rsc.safetensors"
    out.write_bytes(b"earlier result")
    result = runner.invoke(app, ["compensate", "--plugin", "toyseg", "--data", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert out.read_bytes() == b"earlier result"


def test_fuse_prints_plain_progress_when_not_a_terminal(pair_dirs, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fuse", *map(str, pair_dirs), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "fusing: 3/3 (100%)" in result.output


def test_importing_the_cli_loads_no_plugin() -> None:
    import subprocess
    import sys

    code = ("import sys, cldyn_cli.cli, cldyn_cli.plugins as p; "
            "print(p._registry is None, any(m.startswith('cldyn_plugin_') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_info_describes_a_checkpoint_and_its_provenance(tmp_path: Path) -> None:
    import json

    from cldyn_cli.models.loading import embedded_base_path

    result = runner.invoke(app, ["info", str(embedded_base_path())])
    assert result.exit_code == 0, result.output
    assert "base fusion network (VFN)" in result.output and "provenance:" in result.output
    about = json.loads(runner.invoke(app, ["info", str(embedded_base_path()), "--json"]).output)
    assert about["metadata"]["format"] == "cldyn.vfn" and about["metadata"]["config"]["blocks"] == 2
    from cldyn_cli.models.vfn import VFN, VFNConfig

    assert about["numbers"] == sum(t.numel() for t in VFN(VFNConfig(blocks=2)).state_dict().values())  # 35,043
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    result = runner.invoke(app, ["info", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "not a readable safetensors checkpoint" in result.output


@pytest.mark.parametrize("command", ["fuse", "eval", "export", "plugins", "synth", "info", "compensate",
                                     "train-base", None])
def test_every_help_page_is_plain_text_within_80_columns(command: str | None) -> None:
    result = runner.invoke(app, [command, "--help"] if command else ["--help"], env={"COLUMNS": "80"},
                           terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "<bool>" not in result.output and "╭" not in result.output  # no boxes that eat the width
