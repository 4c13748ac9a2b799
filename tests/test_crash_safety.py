"""Crashes and concurrent writers: a killed commit is completed by the next run, a second writer is
refused, leftovers of killed runs are removed, and a resumed train-base or compensate killed in its
first step keeps its log and state.

A kill is simulated in a child process by ``os._exit`` at the chosen moment (no cleanup runs, as
with ``kill -9``).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli.builtin_tasks.toyseg import ToySegConfig, build_net, save_toyseg
from cldyn_cli.cli import create_app
from cldyn_cli.data.synth import write_dataset
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.outputs import all_or_nothing, atomic_path
from imagefiles import save_gray, save_rgb

runner = CliRunner()
app = create_app()
DEAD_PID = 2 ** 30  # above Linux's pid_max: never a live process


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(1)
    for i in range(3):
        save_gray(root / "ir" / f"{i}.png", rng.uniform(0, 1, (24, 24)))
        save_rgb(root / "vis" / f"{i}.png", rng.uniform(0, 1, (24, 24, 3)))
    torch.manual_seed(0)
    save_vfn(VFN(VFNConfig(blocks=2)), root / "base.safetensors", {})  # compensation needs L >= 2
    write_dataset(root / "fmb", n=4, width=32, height=32, seed=0, layout="fmb")
    (root / "small.yaml").write_text("embed_dim: 8\nvectors: 4\nbatch_size: 2\n")
    save_toyseg(build_net(ToySegConfig()).state_dict(), root / "seg.safetensors", ToySegConfig())
    return root


def fuse_args(w: Path, out: Path, *extra: str) -> list[str]:
    return ["fuse", str(w / "ir"), str(w / "vis"), "-o", str(out), "--base", str(w / "base.safetensors"),
            "--device", "cpu", "-q", *extra]


def killed_run(argv: list[str], patch: str) -> int:
    """Run the CLI in a child process after ``patch`` (Python code) has set up the kill; its exit status."""
    code = textwrap.dedent(patch) + f"\nfrom cldyn_cli.cli import create_app\ncreate_app()({argv!r})\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300).returncode


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def reference(w: Path, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    assert runner.invoke(app, fuse_args(w, out)).exit_code == 0
    return pngs(out)


def test_kill_while_moving_into_an_existing_folder_is_completed_by_the_next_run(w, reference, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status = killed_run(fuse_args(w, out), f"""
        import os
        real, moved = os.replace, []
        def replace(src, dst):
            if os.path.dirname(os.fspath(dst)) == {str(out)!r} and ".cldyn-committing-" in os.fspath(src):
                if len(moved) == 1:
                    os._exit(9)
                moved.append(dst)
            real(src, dst)
        os.replace = replace
    """)
    assert status == 9
    assert len(pngs(out)) == 1  # killed after one of three moves
    assert [p.name for p in out.iterdir() if p.name.startswith(".cldyn-committing-")]
    result = runner.invoke(app, fuse_args(w, out))  # the next run completes the commit first
    assert "completed an interrupted write" in result.stderr
    assert result.exit_code == 2 and "3 output(s) already exist" in result.stderr
    assert pngs(out) == reference
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png", "keep.txt"]


def test_kill_before_a_new_folder_appears_leaves_nothing_after_the_next_run(w, reference, tmp_path) -> None:
    out = tmp_path / "new"
    status = killed_run(fuse_args(w, out), f"""
        import os
        real = os.rename
        def rename(src, dst):
            if os.fspath(dst) == {str(out)!r}:
                os._exit(9)
            real(src, dst)
        os.rename = rename
    """)
    assert status == 9
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] and all(".new.cldyn-partial-" in p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, fuse_args(w, out))
    assert result.exit_code == 0, result.output
    assert pngs(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_a_second_writer_of_an_existing_folder_is_refused_with_the_first_ones_pid(w, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with all_or_nothing(out) as stage:
        (stage / "first.png").write_bytes(b"first")
        result = runner.invoke(app, fuse_args(w, out))
        assert result.exit_code == 2
        assert result.stderr.strip() == (f"error: output {out} is being written by another cldyn process "
                                          f"(pid {os.getpid()}); wait for it to finish or choose another folder")
    assert sorted(p.name for p in out.iterdir()) == ["first.png"]


def test_two_writers_of_a_new_folder_cannot_both_succeed(tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="was created by another process"):
        with all_or_nothing(out) as slow:
            (slow / "a.png").write_bytes(b"slow")
            with all_or_nothing(out) as fast:
                (fast / "a.png").write_bytes(b"fast")
    assert (out / "a.png").read_bytes() == b"fast"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_dead_processes_are_removed(w, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale_stage = out / f".cldyn-partial-{DEAD_PID}-x"
    stale_stage.mkdir()
    (stale_stage / "0.png").write_bytes(b"half")
    live_stage = out / f".cldyn-partial-{os.getpid()}-y"  # a live writer's stage is left alone
    live_stage.mkdir()
    assert runner.invoke(app, fuse_args(w, out)).exit_code == 0
    assert not stale_stage.exists() and live_stage.exists()
    stale_tmp = tmp_path / f".m.safetensors.{DEAD_PID}.abc.tmp"
    stale_tmp.write_bytes(b"half")
    with atomic_path(tmp_path / "m.safetensors") as tmp:
        tmp.write_bytes(b"whole")
    assert not stale_tmp.exists() and (tmp_path / "m.safetensors").read_bytes() == b"whole"


def compensate_args(w: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["compensate", "--plugin", "toyseg", "--data", str(w / "fmb"), "--task-weights", str(w / "seg.safetensors"),
            "--config", str(w / "small.yaml"), "--base", str(w / "base.safetensors"), "-o", str(out),
            "--steps", str(steps), "--checkpoint-every", "1", "--device", "cpu", "-q", *extra]


def log_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def train_base_args(w: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train-base", str(w), "-o", str(out), "--steps", str(steps), "--checkpoint-every", "1", "--crop", "16",
            "--batch-size", "2", "--blocks", "1", "--device", "cpu", "-q", *extra]


# Per command: its arguments, and a patch that kills the run inside its next training step.
TRAINERS = {
    "compensate": (compensate_args, """
        import os
        from cldyn_cli.training import closed_loop
        closed_loop.task_step = lambda *args, **kwargs: os._exit(9)
    """),
    "train-base": (train_base_args, """
        import os
        from cldyn_cli.training import base
        base.fusion_loss = lambda *args, **kwargs: os._exit(9)
    """),
}


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_run_killed_in_its_first_resumed_step_keeps_log_and_state(w, tmp_path, command) -> None:
    args, kill = TRAINERS[command]
    out, log, state = tmp_path / "r.safetensors", tmp_path / "r.log.csv", tmp_path / "r.train-state.safetensors"
    refused = runner.invoke(app, args(w, out, 2, "--resume"))
    assert refused.exit_code == 2 and not log.exists()  # a refused run writes no log
    assert runner.invoke(app, args(w, out, 2)).exit_code == 0
    log_before, state_before = log.read_bytes(), state.read_bytes()
    assert [r["step"] for r in log_rows(log)] == ["1", "2"]
    assert killed_run(args(w, out, 4, "--resume"), kill) == 9
    assert log.read_bytes() == log_before and state.read_bytes() == state_before
    assert runner.invoke(app, args(w, out, 4, "--resume")).exit_code == 0
    straight = tmp_path / "straight.safetensors"
    assert runner.invoke(app, args(w, straight, 4)).exit_code == 0
    assert log_rows(log) == log_rows(tmp_path / "straight.log.csv")
    assert [r["step"] for r in log_rows(log)] == ["1", "2", "3", "4"]
