"""Data-parallel training under torchrun (2 CPU ranks, gloo) does the arithmetic of one process.

Both commands run for a few steps on a global batch that the two ranks split unevenly (4 = 2 + 2,
then 3 = 2 + 1), with BatchNorm in training mode, and must end with the weights of a single-process
run with the same global batch and seed; a 2-rank run resumes on 1 rank as if never interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from cldyn_cli.cli import app
from cldyn_cli.data.synth import write_dataset
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import load_compensation, load_vfn, save_vfn
from cldyn_cli.models.rsc import hard_gumbel_softmax
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.training.distributed import Ranks, check_batches

TOLERANCE = 1e-5
runner = CliRunner()


def torchrun(args: list[str], cwd: Path) -> None:
    """``torchrun --nproc-per-node 2 -m cldyn_cli ARGS`` on the CPU."""
    launcher = Path(sys.executable).with_name("torchrun")
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*command, "--standalone", "--nproc-per-node", "2", "-m", "cldyn_cli", *args],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def single(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].double(), b[name].double(), rtol=0, atol=TOLERANCE), \
            (name, (a[name].double() - b[name].double()).abs().max().item())


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_train_base_on_two_ranks_equals_one_process_and_resumes_on_one(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", n=7, width=40, height=32, seed=1, layout="pairs")
    common = ["--batch-size", "4", "--crop", "16", "--blocks", "1", "--seed", "3", "--device", "cpu", "--quiet"]
    torchrun(["train-base", "data", "-o", "two.safetensors", "--steps", "2", *common], tmp_path)
    single(["train-base", str(tmp_path / "data"), "-o", str(tmp_path / "one.safetensors"), "--steps", "2", *common])
    two, one = load_vfn(tmp_path / "two.safetensors")[0], load_vfn(tmp_path / "one.safetensors")[0]
    assert_close(two.state_dict(), one.state_dict())  # parameters and BatchNorm running statistics
    assert json.loads(metadata(tmp_path / "two.safetensors")["provenance"])["world_size"] == 2
    assert json.loads(metadata(tmp_path / "one.safetensors")["provenance"])["world_size"] == 1

    single(["train-base", str(tmp_path / "data"), "-o", str(tmp_path / "two.safetensors"), "--steps", "4",
            "--resume", *common])
    single(["train-base", str(tmp_path / "data"), "-o", str(tmp_path / "straight.safetensors"), "--steps", "4",
            *common])
    resumed, straight = load_vfn(tmp_path / "two.safetensors")[0], load_vfn(tmp_path / "straight.safetensors")[0]
    assert_close(resumed.state_dict(), straight.state_dict())


def test_compensate_two_tasks_on_two_ranks_equals_one_process_and_resumes_on_one(tmp_path: Path) -> None:
    write_dataset(tmp_path / "fmb", n=9, width=40, height=32, seed=2, layout="fmb")
    assert len(list((tmp_path / "fmb" / "train" / "Visible").iterdir())) == 7
    torch.manual_seed(0)
    save_vfn(VFN(VFNConfig(blocks=2)), tmp_path / "base.safetensors", {"note": "untrained"})
    (tmp_path / "tasks.yaml").write_text(
        "embed_dim: 32\nvectors: 8\nbatch_size: 4\ntasks:\n"
        f"  - {{plugin: toyseg, data: {tmp_path / 'fmb'}}}\n"
        f"  - {{plugin: toyseg, data: {tmp_path / 'fmb'}, feature_layer: stem}}\n")
    common = ["--config", str(tmp_path / "tasks.yaml"), "--base", str(tmp_path / "base.safetensors"),
              "--device", "cpu", "--quiet"]
    two, one = str(tmp_path / "two.safetensors"), str(tmp_path / "one.safetensors")
    torchrun(["compensate", "-o", two, "--steps", "3", *common], tmp_path)
    single(["compensate", "-o", one, "--steps", "3", *common])
    (rsc_two, _, meta_two), (rsc_one, _, meta_one) = load_compensation(Path(two)), load_compensation(Path(one))
    assert_close(rsc_two.state_dict(), rsc_one.state_dict())
    assert json.loads(meta_two["world_size"]) == 2 and json.loads(meta_one["world_size"]) == 1
    # Rank 0 logged the global batch's losses: the single process's, row for row.
    rows_two, rows_one = ((tmp_path / f"{n}.log.csv").read_text().splitlines() for n in ("two", "one"))
    assert len(rows_two) == len(rows_one) == 1 + 3 * 2
    for a, b in zip(rows_two[1:], rows_one[1:]):
        assert a.split(",")[:2] == b.split(",")[:2]
        assert abs(float(a.rsplit(",", 1)[1]) - float(b.rsplit(",", 1)[1])) < TOLERANCE

    # The training state holds nothing per rank: the 2-rank state continues on one rank.
    single(["compensate", "-o", two, "--steps", "5", "--resume", *common])
    single(["compensate", "-o", one, "--steps", "5", "--resume", *common])
    assert_close(load_compensation(Path(two))[0].state_dict(), load_compensation(Path(one))[0].state_dict())


def test_batches_are_split_contiguously_with_the_remainder_first() -> None:
    shards = [Ranks(r, 3).shard(7) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 5), (5, 7)]
    assert sum(s.share for s in shards) == pytest.approx(1.0)
    assert Ranks().shard(5).share == 1.0
    with pytest.raises(UserError, match="cannot be split across 4 ranks"):
        Ranks(0, 4).shard(3)


def test_runs_leaving_a_rank_without_samples_are_refused_up_front() -> None:
    check_batches([8, 7], 4, Ranks(0, 2))  # last batches of 4 and 3
    with pytest.raises(UserError, match="leave 1 in the last batch"):
        check_batches([9], 4, Ranks(0, 2))
    check_batches([9], 4, Ranks())  # a single process takes any batch


def test_gumbel_noise_of_a_shard_is_that_rows_noise_of_the_whole_batch() -> None:
    logits = torch.randn(5, 4, 4)
    torch.manual_seed(7)
    whole = torch.nn.functional.gumbel_softmax(logits, tau=0.5, hard=True)
    parts = []
    for start, stop in ((0, 3), (3, 5)):
        torch.manual_seed(7)
        parts.append(hard_gumbel_softmax(logits[start:stop], 0.5, (start, 5)))
    assert torch.equal(torch.cat(parts), whole)
