"""Base training: the loss goes down, and a killed run resumed ends with the same weights."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cldyn_cli.data.pairs import find_pairs
from cldyn_cli.errors import UserError
from cldyn_cli.checkpoint import train_state_path
from cldyn_cli.training.base import TrainBaseConfig, batch_indices, learning_rate, train_base

CFG = TrainBaseConfig(crop=32, batch_size=2, lr=1e-3, steps=6, blocks=1, seed=3, checkpoint_every=2)


def test_batches_are_a_permutation_per_epoch() -> None:
    seen = batch_indices(5, 2, 0, 0) + batch_indices(5, 2, 0, 1) + batch_indices(5, 2, 0, 2)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    # Epoch 1 (steps 3-5) is the permutation seeded with seed * 1_000_003 + epoch, cut into batches.
    epoch1 = torch.randperm(5, generator=torch.Generator().manual_seed(1)).tolist()
    assert batch_indices(5, 2, 0, 3) + batch_indices(5, 2, 0, 4) + batch_indices(5, 2, 0, 5) == epoch1
    assert [batch_indices(5, 2, seed, 0) for seed in (0, 1, 2)] != [batch_indices(5, 2, 0, 0)] * 3


def straight_and_killed_runs(pairs, tmp_path: Path) -> torch.nn.Module:
    """Train CFG through (a.safetensors, returned), and again into b.safetensors killed at step 5."""
    straight = train_base(pairs, tmp_path / "a.safetensors", CFG, torch.device("cpu"))

    def kill_at_5(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_base(pairs, tmp_path / "b.safetensors", CFG, torch.device("cpu"), on_step=kill_at_5)
    return straight


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_killed_run_resumes_to_identical_weights(pair_dirs, tmp_path: Path) -> None:
    pairs = find_pairs(*pair_dirs)
    straight = straight_and_killed_runs(pairs, tmp_path)
    assert train_state_path(tmp_path / "b.safetensors").exists()  # last saved at step 4
    assert_same_weights(straight, train_base(pairs, tmp_path / "b.safetensors", CFG, torch.device("cpu"), resume=True))


def test_resume_refuses_changed_settings(pair_dirs, tmp_path: Path) -> None:
    pairs = find_pairs(*pair_dirs)
    train_base(pairs, tmp_path / "c.safetensors", CFG, torch.device("cpu"))
    changed = TrainBaseConfig(**{**CFG.__dict__, "lr": 0.5})
    with pytest.raises(UserError, match="trained with lr=0.001"):
        train_base(pairs, tmp_path / "c.safetensors", changed, torch.device("cpu"), resume=True)


def test_resume_reads_a_setting_the_state_predates_as_its_default(pair_dirs, tmp_path: Path) -> None:
    """A state written before ``gradient_target`` existed was trained with its default."""
    pairs = find_pairs(*pair_dirs)
    straight = straight_and_killed_runs(pairs, tmp_path)
    state = train_state_path(tmp_path / "b.safetensors")
    with safe_open(state, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["config"])
    del config["gradient_target"]
    save_file(tensors, state, {**metadata, "config": json.dumps(config)})
    other = TrainBaseConfig(**{**CFG.__dict__, "gradient_target": "selected"})
    with pytest.raises(UserError, match="trained with gradient_target='sobel_max'"):
        train_base(pairs, tmp_path / "b.safetensors", other, torch.device("cpu"), resume=True)
    assert_same_weights(straight, train_base(pairs, tmp_path / "b.safetensors", CFG, torch.device("cpu"), resume=True))


def test_loss_decreases(pair_dirs, tmp_path: Path) -> None:
    losses: list[float] = []
    cfg = TrainBaseConfig(**{**CFG.__dict__, "steps": 30, "lr": 3e-3, "checkpoint_every": 100})
    train_base(find_pairs(*pair_dirs), tmp_path / "d.safetensors", cfg, torch.device("cpu"),
               on_step=lambda s, t, loss: losses.append(loss))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_cli_config_file_with_flag_overrides_and_resume(pair_dirs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cldyn_cli.cli import create_app
    app = create_app()
    from cldyn_cli.models.loading import load_vfn

    data = pair_dirs[0].parent
    (tmp_path / "train.yaml").write_text("crop: 32\nbatch_size: 2\nblocks: 1\nsteps: 50\ncheckpoint_every: 2\n")
    out = tmp_path / "m.safetensors"
    runner = CliRunner()
    args = ["train-base", str(data), "-o", str(out), "--config", str(tmp_path / "train.yaml"), "--device", "cpu",
            "--quiet"]
    result = runner.invoke(app, [*args, "--steps", "2"])  # the flag beats the file's 50
    assert result.exit_code == 0, result.output
    model, meta = load_vfn(out)
    assert model.config.blocks == 1 and '"steps": 2' in meta["provenance"]
    assert runner.invoke(app, [*args, "--steps", "3", "--resume"]).exit_code == 0
    assert '"steps": 3' in load_vfn(out)[1]["provenance"]
    result = runner.invoke(app, [*args, "--seed", "9", "--steps", "4", "--resume"])
    assert result.exit_code == 2 and "trained with seed=0" in result.output
    result = runner.invoke(app, ["train-base", str(data), "-o", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_drop_last_skips_the_short_remainder() -> None:
    # 5 samples in batches of 2: two full batches per epoch, the fifth sample waits for the next epoch.
    epoch0 = batch_indices(5, 2, 0, 0, drop_last=True) + batch_indices(5, 2, 0, 1, drop_last=True)
    assert len(epoch0) == 4 and len(set(epoch0)) == 4
    epoch1 = torch.randperm(5, generator=torch.Generator().manual_seed(1)).tolist()  # seed 0, epoch 1
    assert batch_indices(5, 2, 0, 2, drop_last=True) == epoch1[:2]
    assert len(batch_indices(5, 2, 0, 2)) == 1  # without drop_last, step 2 is epoch 0's remainder


def test_cosine_schedule_decays_from_lr_to_zero() -> None:
    cfg = TrainBaseConfig(lr=1e-3, lr_schedule="cosine")
    assert learning_rate(cfg, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50, 100) == pytest.approx(5e-4)
    assert learning_rate(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainBaseConfig(lr=1e-3), 50, 100) == 1e-3


def test_loss_weights_and_stretch_reach_the_saved_model(pair_dirs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cldyn_cli.cli import create_app
    from cldyn_cli.models.loading import load_vfn

    out, app = tmp_path / "w.safetensors", create_app()
    result = CliRunner().invoke(app, ["train-base", str(pair_dirs[0].parent), "-o", str(out), "--steps", "2",
                                      "--crop", "32", "--batch-size", "2", "--blocks", "1", "--intensity-weight",
                                      "0.5", "--gradient-weight", "2", "--gradient-target", "selected", "--lr-schedule",
                                      "cosine", "--stretch", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    model, metadata = load_vfn(out)
    assert model.config.stretch
    train_config = json.loads(metadata["provenance"])["train_config"]
    assert (train_config["intensity_weight"], train_config["gradient_weight"]) == (0.5, 2.0)
    assert train_config["gradient_target"] == "selected"
    # the tests run from a git checkout, so the model records which commit made it
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", json.loads(metadata["provenance"])["git_commit"])
    bad = CliRunner().invoke(app, ["train-base", str(pair_dirs[0].parent), "-o", str(tmp_path / "x.safetensors"),
                                   "--steps", "1", "--lr-schedule", "linear", "--quiet", "--device", "cpu"])
    assert bad.exit_code == 2 and "--lr-schedule must be one of constant, cosine, got 'linear'" in bad.output
    bad = CliRunner().invoke(app, ["train-base", str(pair_dirs[0].parent), "-o", str(tmp_path / "x.safetensors"),
                                   "--steps", "1", "--gradient-target", "sobel", "--quiet", "--device", "cpu"])
    assert bad.exit_code == 2 and "--gradient-target must be one of sobel_max, selected, got 'sobel'" in bad.output


def test_a_poisson_prior_model_trains_and_keeps_its_prior(pair_dirs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cldyn_cli.cli import create_app
    from cldyn_cli.models.loading import load_vfn

    out, app = tmp_path / "p.safetensors", create_app()
    args = ["train-base", str(pair_dirs[0].parent), "--steps", "2", "--crop", "32", "--batch-size", "2",
            "--blocks", "1", "--prior", "poisson", "--quiet", "--device", "cpu"]
    bad = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert bad.exit_code == 2 and "prior 'poisson' is for residual models: add --residual" in bad.output
    assert not out.exists()
    result = CliRunner().invoke(app, [*args, "--residual", "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = load_vfn(out)[0]
    assert (model.config.residual, model.config.prior) == (True, "poisson")
    assert torch.count_nonzero(model.decoder.head[3].weight) > 0  # the correction trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: training on the GPU, pinned batches")
def test_training_on_the_gpu_starts_from_the_cpu_loss(pair_dirs, tmp_path: Path) -> None:
    """Same seed, same first batch: the first loss (before any update) agrees with the CPU's."""
    losses: dict[str, list[float]] = {"cpu": [], "cuda": []}
    for device in losses:
        trained = train_base(find_pairs(*pair_dirs), tmp_path / f"{device}.safetensors", CFG, torch.device(device),
                             on_step=lambda s, t, loss, d=device: losses[d].append(loss))
        assert all(p.isfinite().all() for p in trained.parameters())
    assert losses["cuda"][0] == pytest.approx(losses["cpu"][0], rel=1e-2)  # TF32 convolutions on the GPU
