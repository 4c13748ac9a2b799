"""No checkpoint or model file runs code unless the user passes --trust-checkpoint.

The crafted files would create a marker file if any of their code ran.
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.errors import UserError
from cldyn_plugin_yolo import _env
from cldyn_plugin_yolo.loading import load_detector

runner = CliRunner()


class _Payload:
    """Unpickling this touches ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def evil_pt(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, path)
    return path, marker


@pytest.mark.parametrize("setting", ["", "0", "1"])
def test_malicious_pt_runs_nothing_whatever_ultralytics_safe_load_says(evil_pt, monkeypatch, setting) -> None:
    path, marker = evil_pt
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", setting)
    with pytest.raises(UserError, match="--trust-checkpoint") as info:
        load_detector(path, None)
    assert "ULTRALYTICS_SAFE_LOAD" not in str(info.value)  # the refusal does not advertise the unsafe opt-out
    assert not marker.exists()


def test_trust_checkpoint_is_what_allows_full_unpickling(evil_pt, capsys) -> None:
    path, marker = evil_pt
    with pytest.raises(UserError, match="holds no Ultralytics model"):
        load_detector(path, None, trust=True)
    assert marker.exists()  # the flag does unpickle in full, so it alone guards the code path
    assert "warning: --trust-checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compensate", "eval"])
def test_malicious_pt_through_the_cli_is_one_line_and_runs_nothing(evil_pt, m3fd, tmp_path, command) -> None:
    path, marker = evil_pt
    out = tmp_path / "out"
    argv = {"compensate": ["compensate", "--plugin", "yolo", "--data", str(m3fd), "-o", str(out / "r.safetensors"),
                           "--steps", "1"],
            "eval": ["eval", "--task", "det", "--data", str(m3fd), str(m3fd), "--json", str(out / "m.json")]}[command]
    result = runner.invoke(create_app(), [*argv, "--task-weights", str(path), "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "evil.pt" in result.stderr
    assert not marker.exists() and not out.exists()
    trusted = runner.invoke(create_app(), [*argv, "--task-weights", str(path), "--device", "cpu", "-q",
                                           "--trust-checkpoint"])
    assert trusted.exit_code == 2 and "holds no Ultralytics model" in trusted.stderr
    assert marker.exists() and not out.exists()  # the flag reached the loader, and only it


@pytest.mark.parametrize("layer, activation", [
    ("Conv", "__import__('pathlib').Path('{marker}').touch() or nn.SiLU()"),
    ("Conv", "nn.SiLU(__import__('pathlib').Path('{marker}').touch())"),
    ("check_requirements", None),
    ("eval", None),
])
def test_model_yaml_is_never_evaluated(tmp_path, layer, activation) -> None:
    marker = tmp_path / "MARKER"
    text = "nc: 6\n"
    if activation:
        text += f"activation: \"{activation.format(marker=marker)}\"\n"
    text += f"backbone:\n  - [-1, 1, {layer}, [16, 3, 2]]\nhead:\n  - [-1, 1, Detect, [nc]]\n"
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="never evaluated|not a network module"):
        load_detector(path, None)
    assert not marker.exists()


def test_plain_activation_is_still_accepted(tmp_path) -> None:
    path = tmp_path / "silu.yaml"
    path.write_text("nc: 2\nactivation: nn.LeakyReLU(0.1)\nbackbone:\n  - [-1, 1, Conv, [8, 3, 2]]\n"
                    "  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n"
                    "  - [[0, 1, 2], 1, Detect, [nc]]\n")
    detector = load_detector(path, None)
    assert isinstance(detector.model, torch.nn.Module)


def test_environment_forces_safe_loading(monkeypatch, tmp_path) -> None:
    for name in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "")
    _env._set_environment(tmp_path)
    assert os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"
