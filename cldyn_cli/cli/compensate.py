"""`cldyn compensate`: train the semantic compensation against one or more frozen task networks."""

from __future__ import annotations

import datetime
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from cldyn_cli.checkpoint import check_run_files, resumed_step
from cldyn_cli.plugins import plugin_versions
from cldyn_cli.training.log import StepLog, default_log_path
from cldyn_cli.ui import (Device, MaxPixels, Overwrite, Quiet, TrustCheckpoint, default_of, progress, resolve_device,
                          user_errors)
from cldyn_cli.config import build, read_yaml, with_overrides
from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import load_vfn, save_compensation
from cldyn_cli.training.cagrad import SOLVERS
from cldyn_cli.training.closed_loop import (QUERY_MODES, CompensateConfig, StepReport, TaskEntry, load_tasks,
                                            total_steps, train_compensation)
from cldyn_cli.training.distributed import Ranks, process_group

LOG_FIELDS = ["step", "task", "l_comp", "l_base", "penalty", "loss"]


def read_config(path: Optional[Path]) -> CompensateConfig:
    """A compensate YAML file: the options below plus a ``tasks:`` list of {plugin, data, weights, ...}."""
    if path is None:
        return CompensateConfig()
    values = read_yaml(path)
    tasks = values.pop("tasks", []) or []
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise UserError(f"'tasks' in {path} must be a list of mappings with plugin and data")
    entries = []
    for i, item in enumerate(tasks):
        if "plugin" not in item or "data" not in item:
            raise UserError(f"task {i + 1} in {path} needs both 'plugin' and 'data'")
        entries.append(build(TaskEntry, {k: str(v) if v is not None else None for k, v in item.items()},
                             f"task {i + 1} of {path}"))
    return replace(build(CompensateConfig, values, str(path)), tasks=entries)


@user_errors
def compensate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the trained compensation "
                                         "(.safetensors; it embeds the base network).")],
    plugin: Annotated[Optional[str], typer.Option(help="Task plugin or task name (see `cldyn plugins`), "
                                                  "e.g. yolo or det.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="The task's dataset folder, in its layout.")] = None,
    task_weights: Annotated[Optional[Path], typer.Option(help="The frozen task network's weights.")] = None,
    task_config: Annotated[Optional[Path], typer.Option(help="The task network's config file.")] = None,
    feature_layer: Annotated[Optional[str], typer.Option(help="Task-network layer whose activation conditions "
                                                         "the compensation (default: the plugin's).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML with the options below and a `tasks:` list "
                                                   "(several tasks); flags given here win.")] = None,
    base: Annotated[Optional[Path], typer.Option(help="Base network.", show_default="the shipped model")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Steps (overrides --epochs).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Passes over the largest dataset.",
                                                  show_default=default_of(CompensateConfig, "epochs"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Samples per task per step.",
                                                      show_default=default_of(CompensateConfig, "batch_size"))] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Adam learning rate.",
                                                show_default=default_of(CompensateConfig, "lr"))] = None,
    delta: Annotated[Optional[float], typer.Option(
        min=0.0, help="Penalty weight for doing worse than the base image.",
        show_default=default_of(CompensateConfig, "delta"))] = None,
    cagrad_lambda: Annotated[Optional[float], typer.Option(
        min=0.0, help="CAGrad lambda for combining task gradients.",
        show_default=default_of(CompensateConfig, "cagrad_lambda"))] = None,
    rsc_blocks: Annotated[Optional[int], typer.Option(min=1, help="A2SI blocks per branch K, at most L-1.",
                                                      show_default=default_of(CompensateConfig, "rsc_blocks"))] = None,
    solver: Annotated[Optional[str], typer.Option(
        metavar="|".join(SOLVERS), help="Task-gradient combination: authors (their min-norm solve) or cagrad "
        "(Liu et al. 2021).", show_default=default_of(CompensateConfig, "solver"))] = None,
    query: Annotated[Optional[str], typer.Option(
        metavar="|".join(QUERY_MODES), help="Basis query: authors (no gradient, weight-decayed), no_decay (no "
        "gradient, kept out of weight decay) or learned (straight-through gradient).",
        show_default=default_of(CompensateConfig, "query"))] = None,
    query_stride: Annotated[Optional[int], typer.Option(
        min=1, help="The basis query sees the features area-downsampled by this: cheaper compensated fusion, "
        "different output (1: as published).", show_default=default_of(CompensateConfig, "query_stride"))] = None,
    tau_end: Annotated[Optional[float], typer.Option(
        help="Anneal the kernel-type Gumbel temperature from tau to this over the run.",
        show_default="no annealing")] = None,
    epoch_length: Annotated[Optional[str], typer.Option(
        metavar="longest|shortest", help="Dataset an epoch runs over (shortest: the authors').",
        show_default=default_of(CompensateConfig, "epoch_length"))] = None,
    clip: Annotated[Optional[str], typer.Option(
        metavar="combined|per_branch", help="Clip the combined gradient, or each branch's RSC and not the bank "
        "(the authors').", show_default=default_of(CompensateConfig, "clip"))] = None,
    task_input: Annotated[Optional[str], typer.Option(
        metavar="clamped|unclamped", help="Training RGB shown to the task network (unclamped: the authors').",
        show_default=default_of(CompensateConfig, "task_input"))] = None,
    fidelity: Annotated[Optional[float], typer.Option(
        min=0, help="Weight of the mean absolute difference between compensated and base fused Y in each "
        "task's loss: holds the fusion near the base (0: the paper's loss).",
        show_default=default_of(CompensateConfig, "fidelity"))] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.",
                                                show_default=default_of(CompensateConfig, "seed"))] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        min=1, help="Save the resumable state every N steps.",
        show_default=default_of(CompensateConfig, "checkpoint_every"))] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, or bf16 on a CUDA GPU.",
                                                     show_default=default_of(CompensateConfig, "precision"))] = None,
    log: Annotated[Optional[Path], typer.Option(help="CSV of per-step, per-task losses.",
                                                show_default="OUTPUT with .log.csv")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT's .train-state.safetensors.")] = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    trust_checkpoint: TrustCheckpoint = False,
    quiet: Quiet = False,
) -> None:
    """Train the requirement-driven semantic compensation (bank + one RSC per branch).

    The base network and the task networks stay frozen. Each step, every task scores the base and
    the compensated fused images; the reward-penalty losses' gradients are combined with CAGrad.
    One task by flags (--plugin, --data, ...), several through --config tasks.yaml.
    Under `torchrun --nproc-per-node N` it trains data-parallel: --batch-size is the global batch.
    """
    cfg = with_overrides(read_config(config), dict(
        steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, delta=delta, cagrad_lambda=cagrad_lambda,
        rsc_blocks=rsc_blocks, seed=seed, checkpoint_every=checkpoint_every, precision=precision, solver=solver,
        query=query, query_stride=query_stride, tau_end=tau_end, epoch_length=epoch_length, clip=clip, task_input=task_input,
        fidelity=fidelity))
    if plugin is not None or data is not None:
        if plugin is None or data is None:
            raise UserError("--plugin and --data go together; give both, or use --config with a tasks: list")
        cfg = replace(cfg, tasks=[TaskEntry(plugin, str(data), str(task_weights) if task_weights else None,
                                            str(task_config) if task_config else None, feature_layer)])
    if not cfg.tasks:
        raise UserError("no task given; pass --plugin NAME --data DIR, or --config with a tasks: list")
    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'rsc.safetensors'}")
    log_path = log or default_log_path(output)
    check_run_files(output, log_path, resume, overwrite)
    set_max_pixels(max_pixels)
    log_rows = StepLog(log_path, LOG_FIELDS, resumed_step(output, resume) if resume else None)
    with process_group(resolve_device(device)) as (ranks, dev):
        _compensate(cfg, output, base, log_rows, resume, dev, quiet or not ranks.is_main, ranks, trust_checkpoint)


def _compensate(cfg: CompensateConfig, output: Path, base: Optional[Path], log_rows: StepLog, resume: bool,
                dev: torch.device, quiet: bool, ranks: Ranks, trust: bool) -> None:
    """Train and write (rank 0 alone writes the log and the result)."""
    base_model, base_meta = load_vfn(base, dev)
    tasks = load_tasks(cfg.tasks, dev, trust)
    resumed_at = resumed_step(output, resume)
    total = total_steps(cfg, tasks)
    with progress(quiet) as bar:
        job = bar.add_task("compensating", total=total, completed=resumed_at, status="")

        def on_step(reports: list[StepReport], _total: int) -> None:
            log_rows.add([{k: getattr(r, k) for k in LOG_FIELDS} for r in reports])
            status = "  ".join(f"{r.task}: comp {r.l_comp:.3f} base {r.l_base:.3f} pen {r.penalty:.3f}"
                               for r in reports)
            bar.update(job, completed=reports[0].step, status=status)

        compensation = train_compensation(base_model, tasks, output, cfg, dev, resume=resume, on_step=on_step,
                                          ranks=ranks, on_checkpoint=lambda _step: log_rows.write())
    if not ranks.is_main:
        return
    extra = {"tasks": [{**asdict(t.entry), "task": t.backend.name, "feature_layer": t.backend.feature_layer}
                       for t in tasks],
             "hyper": cfg.hyper(), "base": str(base) if base else "embedded", "plugins": plugin_versions(),
             "base_provenance": base_meta.get("provenance", ""), "steps": total, "world_size": ranks.world_size,
             "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    save_compensation(compensation.cpu(), base_model.cpu(), output, extra)
    if not quiet:
        typer.echo(f"wrote {output} and {log_rows.path}", err=True)


def register(app: typer.Typer) -> None:
    app.command("compensate")(compensate)
