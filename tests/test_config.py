"""The declared config schema: coercion, ranges and one wording for flags, files and metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from cldyn_cli.builtin_tasks.toyseg import ToySegConfig
from cldyn_cli.config import build, load_config, with_overrides
from cldyn_cli.errors import UserError
from cldyn_cli.models.vfn import VFNConfig
from cldyn_cli.training.base import TrainBaseConfig
from cldyn_cli.training.closed_loop import CompensateConfig


def test_yaml_strings_that_are_numbers_are_coerced(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("lr: 1e-3\nsteps: 2.0\nbatch_size: '4'\n")
    config = load_config(TrainBaseConfig, path, {})
    assert (config.lr, config.steps, config.batch_size) == (0.001, 2, 4)
    assert type(config.steps) is int and type(config.lr) is float


@pytest.mark.parametrize("cls, key, value, message", [
    (TrainBaseConfig, "steps", 0, "must be at least 1, got 0"),
    (TrainBaseConfig, "lr", 0.0, "must be greater than 0, got 0.0"),
    (TrainBaseConfig, "blocks", "four", "must be an integer, got 'four'"),
    (TrainBaseConfig, "steps", 2.5, "must be an integer, got 2.5"),
    (TrainBaseConfig, "epochs", True, "must be an integer, got True"),
    (CompensateConfig, "tau", 0, "must be greater than 0, got 0.0"),
    (CompensateConfig, "precision", "fp16", "must be one of fp32, bf16, got 'fp16'"),
    (CompensateConfig, "embed_dim", 6, "must be a multiple of 4, got 6"),
    (CompensateConfig, "cagrad_lambda", float("nan"), "must be a finite number, got nan"),
])
def test_flags_and_files_are_refused_alike(cls, key, value, message) -> None:
    with pytest.raises(UserError) as from_file:
        build(cls, {key: value}, "run.yaml")
    assert str(from_file.value) == f"{key} in run.yaml {message}"
    with pytest.raises(UserError) as from_flag:
        with_overrides(cls(), {key: value})
    assert str(from_flag.value) == f"--{key.replace('_', '-')} {message}"


def test_metadata_and_task_configs_use_the_same_schema() -> None:
    with pytest.raises(UserError, match="blocks in the config of m.safetensors must be at least 1, got 0"):
        build(VFNConfig, {"blocks": 0}, "the config of m.safetensors")
    with pytest.raises(UserError, match="num_classes in seg.yaml must be at least 2, got 0"):
        build(ToySegConfig, {"num_classes": 0}, "seg.yaml")
    assert build(ToySegConfig, {"num_classes": "3"}, "seg.yaml").num_classes == 3


def test_unset_flags_keep_the_file_values() -> None:
    config = with_overrides(TrainBaseConfig(steps=7), {"steps": None, "lr": 0.5})
    assert (config.steps, config.lr) == (7, 0.5)
