"""The closed loop end to end with the built-in toyseg task: identity at start, learning,
held-out improvement over the base, exact resume, and the CLI commands."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli import Fuser, __version__
from cldyn_cli.builtin_tasks.toyseg import ToySegConfig, save_toyseg, train_toyseg
from cldyn_cli.cli import create_app
from cldyn_cli.data.synth import CLASSES, write_dataset
from cldyn_cli.fusion import compensated_y, task_rgb
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import load_compensation, load_vfn, save_compensation, save_vfn
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.plugins import get_task
from cldyn_cli.tasks import TaskOptions
from cldyn_cli.training.closed_loop import CompensateConfig, TaskEntry, load_tasks, task_step, train_compensation

app = create_app()

SMALL = dict(embed_dim=32, vectors=8, batch_size=4, checkpoint_every=4)
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Synthetic FMB scenes, a trained toyseg network and a base model (the shipped one)."""
    root = tmp_path_factory.mktemp("loop")
    write_dataset(root / "fmb", n=20, width=48, height=32, seed=5, layout="fmb")
    config = ToySegConfig(num_classes=len(CLASSES))
    save_toyseg(train_toyseg(root / "fmb", steps=60, seed=0, config=config), root / "seg.safetensors", config)
    base, _ = load_vfn()
    save_vfn(base, root / "base.safetensors", {"note": "copy of the shipped model"})
    return {"root": root, "data": root / "fmb", "seg": root / "seg.safetensors", "base": root / "base.safetensors"}


def config(world: dict[str, Path], **changes) -> CompensateConfig:
    entry = TaskEntry(plugin="toyseg", data=str(world["data"]), weights=str(world["seg"]))
    return replace(CompensateConfig(tasks=[entry], **SMALL), **changes)


def held_out_losses(world, compensation: SemanticCompensation) -> tuple[float, float]:
    """(base, compensated) task loss over the test split."""
    base, _ = load_vfn(world["base"])
    task = get_task("toyseg").load(TaskOptions(weights=world["seg"]))
    data = task.dataset(world["data"], "test")
    batch = task.collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        base_y, comp_y = compensated_y(base, compensation.eval(), task, batch.ir, batch.vis)
        return (float(task.loss(task_rgb(base_y, batch.vis), batch.targets)),
                float(task.loss(task_rgb(comp_y, batch.vis), batch.targets)))


def test_fresh_compensation_equals_the_base(world) -> None:
    torch.manual_seed(0)
    base_loss, comp_loss = held_out_losses(world, SemanticCompensation(config(world).rsc_config(8)))
    assert base_loss == comp_loss


def test_training_lowers_the_held_out_task_loss_below_the_base(world) -> None:
    cfg = config(world, steps=30)
    base, _ = load_vfn(world["base"])
    compensation = train_compensation(base, load_tasks(cfg.tasks, torch.device("cpu")),
                                      world["root"] / "a.safetensors", cfg, torch.device("cpu"))
    base_loss, comp_loss = held_out_losses(world, compensation)
    assert comp_loss < base_loss


def test_killed_run_resumes_to_identical_weights(world) -> None:
    cfg = config(world, steps=6)
    tasks = load_tasks(cfg.tasks, torch.device("cpu"))
    base, _ = load_vfn(world["base"])
    straight = train_compensation(base, tasks, world["root"] / "s.safetensors", cfg, torch.device("cpu"))

    def kill_at_6(reports, total) -> None:
        if reports[0].step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_compensation(base, tasks, world["root"] / "k.safetensors", cfg, torch.device("cpu"), on_step=kill_at_6)
    resumed = train_compensation(base, tasks, world["root"] / "k.safetensors", cfg, torch.device("cpu"), resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_too_many_blocks_for_the_base_is_a_user_error(world, tmp_path: Path) -> None:
    save_vfn(VFN(VFNConfig(blocks=2)), tmp_path / "b2.safetensors", {})
    cfg = config(world, steps=1, rsc_blocks=2)
    base, _ = load_vfn(tmp_path / "b2.safetensors")
    with pytest.raises(UserError, match=r"K <= L-1.*; lower --rsc-blocks"):
        train_compensation(base, load_tasks(cfg.tasks, torch.device("cpu")), tmp_path / "x.safetensors", cfg,
                           torch.device("cpu"))


def test_cli_compensate_then_fuse_with_the_task(world, tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text("embed_dim: 32\nvectors: 8\n")
    result = runner.invoke(app, ["compensate", "--plugin", "toyseg", "--data", str(world["data"]),
                                 "--task-weights", str(world["seg"]), "--base", str(world["base"]),
                                 "--config", str(tmp_path / "small.yaml"), "--steps", "3", "--batch-size", "2",
                                 "-o", str(tmp_path / "rsc.safetensors"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "compensating: 3/3 (100%)" in result.output  # not a terminal: plain progress lines
    log = (tmp_path / "rsc.log.csv").read_text().splitlines()
    assert log[0] == "step,task,l_comp,l_base,penalty,loss" and len(log) == 4
    compensation, base, meta = load_compensation(tmp_path / "rsc.safetensors")
    assert '"task": "toyseg"' in meta["tasks"] and compensation.config.embed_dim == 32
    assert json.loads(meta["plugins"])["toyseg"] == f"cldyn {__version__}"  # plugin versions at training time
    test_dir = world["data"] / "test"
    result = runner.invoke(app, ["fuse", str(test_dir / "Infrared"), str(test_dir / "Visible"), "--task", "toyseg",
                                 "--rsc", str(tmp_path / "rsc.safetensors"), "--task-weights", str(world["seg"]),
                                 "-o", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    # The Python API's compensated form gives the same images.
    from PIL import Image

    fuser = Fuser(rsc=tmp_path / "rsc.safetensors", task="toyseg", task_weights=world["seg"], device="cpu")
    name = sorted((tmp_path / "out").glob("*.png"))[0].stem
    [ir_file] = (test_dir / "Infrared").glob(name + ".*")
    [vis_file] = (test_dir / "Visible").glob(name + ".*")
    fused = fuser(np.asarray(Image.open(ir_file)), np.asarray(Image.open(vis_file)))
    assert np.array_equal(fused, np.asarray(Image.open(tmp_path / "out" / f"{name}.png")))
    # Without the task network's weights, or for a task it was not trained for: one-line errors.
    result = runner.invoke(app, ["fuse", str(test_dir / "Infrared"), str(test_dir / "Visible"), "--task", "toyseg",
                                 "--rsc", str(tmp_path / "rsc.safetensors"), "-o", str(tmp_path / "o2"), "--quiet"])
    assert result.exit_code == 2 and "needs --task-weights" in result.output
    compensation, base, meta = load_compensation(tmp_path / "rsc.safetensors")
    save_compensation(compensation, base, tmp_path / "other.safetensors", {"tasks": [{"task": "det"}]})
    with pytest.raises(UserError, match="was trained for det, not toyseg"):
        Fuser(rsc=tmp_path / "other.safetensors", task="toyseg", task_weights=world["seg"], device="cpu")


def test_cli_refuses_rsc_without_task_and_unknown_tasks(world, tmp_path: Path) -> None:
    test_dir = world["data"] / "test"
    args = ["fuse", str(test_dir / "Infrared"), str(test_dir / "Visible"), "-o", str(tmp_path / "o"), "--quiet"]
    result = runner.invoke(app, [*args, "--rsc", str(world["seg"])])
    assert result.exit_code == 2 and "--task and --rsc go together" in result.output
    result = runner.invoke(app, [*args, "--task", "nosuch", "--rsc", str(world["seg"])])
    assert result.exit_code == 2 and "unknown task 'nosuch'" in result.output
    result = runner.invoke(app, ["compensate", "--plugin", "toyseg", "-o", str(tmp_path / "r.safetensors")])
    assert result.exit_code == 2 and "--plugin and --data go together" in result.output
    result = runner.invoke(app, ["compensate", "--plugin", "toyseg", "--data", str(world["data"]), "--steps", "1",
                                 "-o", str(tmp_path / "r.safetensors")])
    assert result.exit_code == 2 and "needs --task-weights" in result.output


def test_cli_two_tasks_from_a_yaml_config(world, tmp_path: Path) -> None:
    """Two task entries (toyseg tapped at two layers) train together through CAGrad."""
    (tmp_path / "tasks.yaml").write_text(
        "embed_dim: 32\nvectors: 8\nbatch_size: 2\ntasks:\n"
        f"  - {{plugin: toyseg, data: {world['data']}, weights: {world['seg']}}}\n"
        f"  - {{plugin: toyseg, data: {world['data']}, weights: {world['seg']}, feature_layer: stem}}\n")
    result = runner.invoke(app, ["compensate", "--config", str(tmp_path / "tasks.yaml"), "--steps", "2",
                                 "--base", str(world["base"]), "-o", str(tmp_path / "rsc.safetensors"),
                                 "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "rsc.log.csv").read_text().splitlines()[1:]
    assert len(rows) == 4  # two steps x two tasks
    _, _, meta = load_compensation(tmp_path / "rsc.safetensors")
    assert '"feature_layer": "stem"' in meta["tasks"]


def test_config_with_an_unknown_key_is_refused(world, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("embed_dim: 32\nlearning_rate: 0.1\n")
    result = runner.invoke(app, ["compensate", "--config", str(tmp_path / "bad.yaml"), "--plugin", "toyseg",
                                 "--data", str(world["data"]), "-o", str(tmp_path / "r.safetensors")])
    assert result.exit_code == 2 and "unknown key(s) learning_rate" in result.output


def test_eval_task_scores_fused_folders_through_the_plugin(world, tmp_path: Path) -> None:
    """`cldyn eval --task` runs the plugin's evaluate on the fused images against the split's labels."""
    from PIL import Image

    test_dir = world["data"] / "test"
    result = runner.invoke(app, ["fuse", str(test_dir / "Infrared"), str(test_dir / "Visible"), "-o",
                                 str(tmp_path / "base"), "--base", str(world["base"]), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (tmp_path / "visible").mkdir()  # a second "method": the visible images themselves
    for path in (test_dir / "Visible").iterdir():
        Image.open(path).convert("RGB").save(tmp_path / "visible" / f"{path.stem}.png")
    out = tmp_path / "scores"
    result = runner.invoke(app, ["eval", "--task", "toyseg", "--data", str(world["data"]), str(tmp_path / "base"),
                                 "--fused", str(tmp_path / "visible"), "--task-weights", str(world["seg"]),
                                 "--json", str(out / "m.json"), "--csv", str(out / "m.csv"), "--report",
                                 str(out / "report"), "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "toyseg on base: 4/4 (100%)" in result.output and "mIoU" in result.output
    doc = json.loads((out / "m.json").read_text())
    assert doc["task"] == "toyseg" and doc["split"] == "test" and list(doc["methods"]) == ["base", "visible"]
    # The same numbers as the backend's own evaluate on the fused files and the labels.
    backend = get_task("toyseg").load(TaskOptions(weights=world["seg"]))
    samples = [backend.dataset(world["data"], "test")[i] for i in range(4)]
    fused = torch.stack([torch.from_numpy(np.asarray(Image.open(tmp_path / "base" / f"{s.name}.png"),
                                                     dtype=np.float32) / 255).permute(2, 0, 1) for s in samples])
    expected = backend.evaluate([(fused, torch.stack([s.target for s in samples]))])
    assert doc["methods"]["base"]["images"] == 4
    assert doc["methods"]["base"]["metrics"] == pytest.approx(expected)
    rows = (out / "m.csv").read_text().splitlines()
    assert rows[0].startswith("method,images,") and rows[1].startswith("base,4,") and len(rows) == 3
    assert "toyseg" in (out / "report" / "index.html").read_text()
    # Missing pieces are one-line errors, and nothing is written.
    result = runner.invoke(app, ["eval", "--task", "toyseg", str(tmp_path / "base"), "--quiet"])
    assert result.exit_code == 2 and "--task needs --data" in result.output
    result = runner.invoke(app, ["eval", "--task", "toyseg", "--data", str(world["data"]), str(tmp_path / "base"),
                                 "--quiet"])
    assert result.exit_code == 2 and "needs --task-weights" in result.output
    result = runner.invoke(app, ["eval", "--task", "toyseg", "--data", str(world["data"]), "--split", "train",
                                 str(tmp_path / "base"), "--task-weights", str(world["seg"]), "--quiet",
                                 "--json", str(tmp_path / "no.json")])
    assert result.exit_code == 2 and "no fused image named" in result.output
    assert not (tmp_path / "no.json").exists()


# --- options that reproduce the authors' code or depart from it (docs/method.md, last section) ---

def short_run(world, **changes) -> tuple[SemanticCompensation, SemanticCompensation]:
    """(initial, trained) compensation after a few steps with ``changes``."""
    cfg = config(world, steps=3, **changes)
    torch.manual_seed(cfg.seed)
    initial = SemanticCompensation(cfg.rsc_config(8))
    base, _ = load_vfn(world["base"])
    trained = train_compensation(base, load_tasks(cfg.tasks, torch.device("cpu")),
                                 world["root"] / f"opt-{len(changes)}.safetensors", cfg, torch.device("cpu"))
    return initial, trained


def query_weights(compensation: SemanticCompensation) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in compensation.query_parameters()])


@pytest.mark.parametrize("query, change", [("authors", "shrinks"), ("no_decay", "kept"), ("learned", "trained")])
def test_query_modes(world, query: str, change: str) -> None:
    initial, trained = short_run(world, query=query, weight_decay=0.1)
    before, after = query_weights(initial), query_weights(trained)
    if change == "kept":
        assert torch.equal(before, after)
    elif change == "shrinks":  # no gradient, only decay: Adam moves every weight lr towards zero per step
        big = before.abs() > 0.05  # 3 steps of lr 0.01 cannot cross zero
        torch.testing.assert_close(after[big].abs(), before[big].abs() - 0.03, atol=1e-3, rtol=0)
    else:
        assert not torch.equal(before, after) and not (after.abs() <= before.abs()).all()
    assert not any(b.learn_query for b in trained.blocks())  # the flag is for training only


def test_tau_anneals_geometrically_to_tau_end() -> None:
    from cldyn_cli.training.closed_loop import gumbel_tau

    cfg = CompensateConfig(tau=0.5, tau_end=0.05)
    assert [round(gumbel_tau(cfg, s, 3), 6) for s in range(3)] == [0.5, round(0.5 * 0.1 ** 0.5, 6), 0.05]
    assert gumbel_tau(CompensateConfig(tau=0.5), 7, 10) == 0.5


def test_per_branch_clipping_clips_each_rsc_and_never_the_bank() -> None:
    from cldyn_cli.training.closed_loop import clip_gradients

    torch.manual_seed(0)
    small = CompensateConfig(embed_dim=SMALL["embed_dim"], vectors=SMALL["vectors"])
    compensation = SemanticCompensation(small.rsc_config(8))
    params = [p for p in compensation.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    clip_gradients(compensation, params, CompensateConfig(clip="per_branch", clip_norm=1.0))
    norm = lambda ps: float(torch.cat([p.grad.flatten() for p in ps]).norm())  # noqa: E731
    for branch in compensation.branches.values():
        assert norm(branch.parameters()) == pytest.approx(1.0, rel=1e-4)
    assert torch.equal(compensation.bank.vectors.grad, torch.full_like(compensation.bank.vectors, 3.0))
    clip_gradients(compensation, params, CompensateConfig(clip="combined", clip_norm=1.0))
    assert norm(params) == pytest.approx(1.0, rel=1e-4)


def test_epoch_length_runs_over_the_longest_or_the_shortest_dataset() -> None:
    from types import SimpleNamespace

    from cldyn_cli.training.closed_loop import total_steps

    tasks = [SimpleNamespace(dataset=range(10)), SimpleNamespace(dataset=range(3))]
    assert total_steps(CompensateConfig(epochs=2, batch_size=4), tasks) == 6  # ceil(10 / 4) * 2
    assert total_steps(CompensateConfig(epochs=2, batch_size=4, epoch_length="shortest"), tasks) == 2


def test_unclamped_task_input_keeps_values_outside_the_unit_range() -> None:
    fused_y = torch.full((1, 1, 2, 2), 1.3)
    vis = torch.rand(1, 3, 2, 2)
    assert task_rgb(fused_y, vis).max() <= 1.0
    assert task_rgb(fused_y, vis, clamp=False).max() > 1.0
    assert task_rgb(fused_y, vis[:, :1], clamp=False).max() == pytest.approx(1.3)


def test_fidelity_adds_the_weighted_distance_to_the_base_image(world) -> None:
    base, _ = load_vfn(world["base"])
    task = get_task("toyseg").load(TaskOptions(weights=world["seg"]))
    data = task.dataset(world["data"], "train")
    batch = task.collate([data[i] for i in range(4)])
    torch.manual_seed(0)
    compensation = SemanticCompensation(RSCConfig(embed_dim=32, vectors=8)).eval()
    for block in compensation.blocks():
        torch.nn.init.normal_(block.inject.weight, std=0.5)
    plain, plain_report = task_step(base, compensation, task, batch, delta=5.0)
    anchored, report = task_step(base, compensation, task, batch, delta=5.0, fidelity=2.0)
    with torch.no_grad():
        base_y, comp_y = compensated_y(base, compensation, task, batch.ir, batch.vis)
    distance = (comp_y - base_y).abs().mean()
    assert distance > 1e-4  # the compensation changes the image
    torch.testing.assert_close(anchored, plain + 2.0 * distance)
    assert report.penalty == pytest.approx(plain_report.penalty) and report.loss == pytest.approx(anchored.item())


def test_cli_takes_the_method_options(world, tmp_path: Path) -> None:
    out = tmp_path / "rsc.safetensors"
    result = runner.invoke(app, ["compensate", "--plugin", "toyseg", "--data", str(world["data"]), "--task-weights",
                                 str(world["seg"]), "--base", str(world["base"]), "-o", str(out), "--steps", "2",
                                 "--solver", "cagrad", "--query", "learned", "--tau-end", "0.1", "--clip",
                                 "per_branch", "--task-input", "unclamped", "--epoch-length", "shortest", "--query-stride", "2",
                                 "--fidelity", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    hyper = json.loads(load_compensation(out)[2]["hyper"])
    chosen = (hyper["solver"], hyper["query"], hyper["tau_end"], hyper["clip"], hyper["task_input"], hyper["fidelity"])
    assert chosen == ("cagrad", "learned", 0.1, "per_branch", "unclamped", 0.5)
    compensation = load_compensation(out)[0]
    assert [block.query_stride for block in compensation.blocks()] == [2, 2]
    bad = runner.invoke(app, ["compensate", "--plugin", "toyseg", "--data", str(world["data"]), "-o",
                              str(tmp_path / "b.safetensors"), "--query", "sometimes"])
    assert bad.exit_code == 2 and "--query must be one of authors, no_decay, learned" in bad.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bf16 autocast of the closed loop")
def test_bf16_training_on_the_gpu_follows_the_fp32_cpu_run(world) -> None:
    """The first step sees the same batch and weights: its base loss agrees to bf16's precision."""
    first: dict[str, float] = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "bf16")):
        cfg = config(world, steps=3, precision=precision)
        base, _ = load_vfn(world["base"])
        trained = train_compensation(base, load_tasks(cfg.tasks, torch.device(device)),
                                     world["root"] / f"{precision}.safetensors", cfg, torch.device(device),
                                     on_step=lambda reports, total, d=device: first.setdefault(d, reports[0].l_base))
        assert all(p.isfinite().all() for p in trained.parameters())
    assert first["cuda"] == pytest.approx(first["cpu"], rel=0.05)
