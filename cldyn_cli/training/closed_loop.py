"""Closed-loop training of the semantic compensation (`cldyn compensate`), as docs/method.md describes.

Per step and per task: fuse with the frozen base, let the frozen task network see it (features
and L_base), fuse again with the compensation, take L_comp, form the reward-penalty loss and keep
its gradient. The per-task gradients are combined with CAGrad, clipped and applied with Adam.
Batch order, Gumbel noise and all states are checkpointed, so a resumed run repeats exactly.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from cldyn_cli.checkpoint import RSC_TRAIN_STATE_FORMAT, existing_train_state, train_state_path
from cldyn_cli.config import setting
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import compensated_y, task_rgb
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.models.vfn import VFN
from cldyn_cli.tasks import Batch, TaskBackend
from cldyn_cli.training.base import batch_indices
from cldyn_cli.training.cagrad import SOLVERS, combine
from cldyn_cli.training.distributed import SINGLE, Ranks, Shard, check_batches, global_batchnorm
from cldyn_cli.training.reward import reward_penalty
from cldyn_cli.training.state import TrainState

# How the basis-selection query trains: authors = no gradient, in weight decay (it shrinks);
# no_decay = no gradient, out of weight decay (it keeps its initialisation); learned = a
# straight-through gradient through a soft ranking (models/rsc.py, A2SI.select_basis).
QUERY_MODES = ("authors", "no_decay", "learned")


@dataclass
class TaskEntry:
    """One downstream task of a compensation run (a `tasks:` item of the YAML config)."""

    plugin: str  # plugin or task name, e.g. "yolo" or "det"
    data: str  # dataset root in the task's layout
    weights: Optional[str] = None
    config: Optional[str] = None
    feature_layer: Optional[str] = None
    split: str = "train"


@dataclass
class CompensateConfig:
    """Hyper-parameters of `cldyn compensate` (the values of docs/method.md by default)."""

    tasks: list[TaskEntry] = field(default_factory=list)
    epochs: int = setting(50, min=1)
    steps: Optional[int] = setting(None, min=1)  # when set, overrides epochs
    batch_size: int = setting(4, min=1)
    lr: float = setting(0.01, above=0)
    weight_decay: float = setting(1e-4, min=0)
    delta: float = setting(5.0, min=0)
    cagrad_lambda: float = setting(0.5, min=0)
    clip_norm: float = setting(1.0, above=0)
    rsc_blocks: int = setting(1, min=1)
    embed_dim: int = setting(256, min=4, multiple=4)
    filters: int = setting(4, min=1)
    sets: int = setting(4, choices=(4,))  # one basis set per kernel type
    vectors: int = setting(32, min=1)
    tau: float = setting(0.5, above=0)
    query_stride: int = setting(1, min=1)  # the basis query sees X area-downsampled (1: as published)
    # Options where the authors' code and this implementation may differ (docs/method.md, last section).
    solver: str = setting("authors", choices=SOLVERS)  # authors' min-norm solve, or Liu et al.'s CAGrad
    query: str = setting("authors", choices=QUERY_MODES)
    tau_end: Optional[float] = setting(None, above=0)  # anneal the Gumbel temperature from tau to this
    epoch_length: str = setting("longest", choices=("longest", "shortest"))  # dataset an epoch runs over
    clip: str = setting("combined", choices=("combined", "per_branch"))  # per_branch: each RSC, never the bank
    task_input: str = setting("clamped", choices=("clamped", "unclamped"))  # training RGB the task network sees
    fidelity: float = setting(0.0, min=0)  # weight of L1(compensated Y, base Y) in each task's loss (0: the paper's)
    seed: int = setting(0, min=0)
    checkpoint_every: int = setting(50, min=1)
    precision: str = setting("fp32", choices=("fp32", "bf16"))

    def rsc_config(self, channels: int) -> RSCConfig:
        return RSCConfig(blocks=self.rsc_blocks, embed_dim=self.embed_dim, channels=channels, filters=self.filters,
                         sets=self.sets, vectors=self.vectors, tau=self.tau, query_stride=self.query_stride)

    def hyper(self) -> dict[str, Any]:
        """Everything but the task list, as recorded in checkpoints."""
        return {k: v for k, v in asdict(self).items() if k != "tasks"}


@dataclass
class LoadedTask:
    """A task ready for training: its backend, its dataset and its place in the run."""

    entry: TaskEntry
    backend: TaskBackend
    dataset: Any

    def batch(self, index: int, step: int, batch_size: int, seed: int, device: torch.device,
              ranks: Ranks = SINGLE) -> tuple[Batch, Shard]:
        """This rank's share of the batch of ``step``: a seeded permutation per epoch, different for every task."""
        indices = batch_indices(len(self.dataset), batch_size, seed * 7919 + index, step)
        shard = ranks.shard(len(indices))
        batch = self.backend.collate([self.dataset[i] for i in indices[shard.start:shard.stop]])
        return Batch(batch.ir.to(device), batch.vis.to(device), batch.targets, batch.names), shard


@dataclass
class StepReport:
    """Per-task losses of one step, for the progress bar and the log."""

    step: int
    task: str
    l_comp: float
    l_base: float
    penalty: float
    loss: float


StepCallback = Callable[[list[StepReport], int], None]

# Settings that must not change between a run and its resumption.
_RESUME_KEYS = ("batch_size", "lr", "weight_decay", "delta", "cagrad_lambda", "clip_norm", "rsc_blocks",
                "embed_dim", "filters", "sets", "vectors", "tau", "seed", "precision", "solver", "query", "tau_end",
                "epoch_length", "clip", "task_input", "fidelity")


def total_steps(config: CompensateConfig, tasks: list[LoadedTask]) -> int:
    if config.steps is not None:
        return config.steps
    pick = max if config.epoch_length == "longest" else min
    return config.epochs * math.ceil(pick(len(t.dataset) for t in tasks) / config.batch_size)


def _autocast(config: CompensateConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.precision == "fp32":
        return contextlib.nullcontext()
    if config.precision != "bf16":
        raise UserError(f"unknown precision {config.precision!r}; use fp32 or bf16")
    if device.type != "cuda":
        raise UserError("--precision bf16 needs --device cuda; the CPU path trains in fp32")
    return torch.autocast("cuda", dtype=torch.bfloat16)


def task_step(base: VFN, compensation: SemanticCompensation, task: TaskBackend, batch: Batch,
              delta: float, batch_mean: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
              clamp: bool = True, fidelity: float = 0.0) -> tuple[torch.Tensor, StepReport]:
    """The reward-penalty loss of one task on one batch (with graph) and its report (without).

    ``batch_mean`` turns a rank's batch losses into the global batch's (data-parallel runs);
    ``clamp`` False shows the task network unclamped RGB (``task_input: unclamped``);
    ``fidelity`` adds that multiple of the mean absolute difference between the compensated and
    the base fused Y, which holds the compensated image near the base one (its fusion quality).
    """
    base_y, comp_y = compensated_y(base, compensation, task, batch.ir, batch.vis, clamp)
    with torch.no_grad():
        l_base = batch_mean(task.loss(task_rgb(base_y, batch.vis, clamp), batch.targets))
    l_comp = batch_mean(task.loss(task_rgb(comp_y, batch.vis, clamp), batch.targets))
    penalised = reward_penalty(l_comp, l_base, delta)
    loss = penalised + fidelity * batch_mean(F.l1_loss(comp_y, base_y)) if fidelity else penalised
    report = StepReport(0, task.name, l_comp.item(), l_base.item(), (penalised - l_comp).item(), loss.item())
    return loss, report


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(grads, params)])


def _assign_grad(flat: torch.Tensor, params: list[torch.nn.Parameter]) -> None:
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()


def param_groups(compensation: SemanticCompensation, params: list[torch.nn.Parameter],
                 config: CompensateConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: with ``query: no_decay`` the basis queries (which get no gradient)
    are kept out of weight decay, which would otherwise shrink them towards zero."""
    if config.query != "no_decay":
        return [{"params": params}]
    query = {id(p) for p in compensation.query_parameters()}
    return [{"params": [p for p in params if id(p) not in query]},
            {"params": [p for p in params if id(p) in query], "weight_decay": 0.0}]


def gumbel_tau(config: CompensateConfig, step: int, total: int) -> float:
    """The kernel-type temperature at ``step``: ``tau``, or annealed geometrically to ``tau_end`` at the last step."""
    if config.tau_end is None or total <= 1:
        return config.tau
    return config.tau * (config.tau_end / config.tau) ** (step / (total - 1))


def clip_gradients(compensation: SemanticCompensation, params: list[torch.nn.Parameter],
                   config: CompensateConfig) -> None:
    """Clip to ``clip_norm``: the combined gradient of everything, or (``per_branch``, the authors')
    each branch's RSC on its own and the shared bank not at all."""
    if config.clip == "combined":
        torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
        return
    for branch in compensation.branches.values():
        torch.nn.utils.clip_grad_norm_([p for p in branch.parameters() if p.requires_grad], config.clip_norm)


def train_compensation(base: VFN, tasks: list[LoadedTask], output: Path, config: CompensateConfig,
                       device: torch.device, resume: bool = False,
                       on_step: Optional[StepCallback] = None, ranks: Ranks = SINGLE,
                       on_checkpoint: Optional[Callable[[int], None]] = None) -> SemanticCompensation:
    """Train the bank and both RSCs against ``tasks`` with ``base`` and the task networks frozen.

    Under torchrun (``ranks``) each rank takes its share of every task's global batch; the task
    losses are global batch means, each task's gradient is averaged over ranks before CAGrad
    combines them, so every rank takes the same step, and only rank 0 writes. ``on_checkpoint(step)``
    runs just before each state save, so that what it writes (the log) is never behind the state a
    resumed run starts from.
    """
    if not tasks:
        raise UserError("no tasks to compensate for; give --plugin or a config with a tasks: list")
    check_batches([len(t.dataset) for t in tasks], config.batch_size, ranks)
    base = base.to(device).eval().requires_grad_(False)
    torch.manual_seed(config.seed)
    try:
        compensation = SemanticCompensation(config.rsc_config(base.config.channels))
    except ValueError as exc:  # settings that are each valid but do not fit together, e.g. filters > vectors
        raise UserError(f"the compensation settings do not fit together: {exc}") from None
    try:
        compensation.check(base)
    except ValueError as exc:
        raise UserError(f"{exc}; lower --rsc-blocks") from None
    compensation = compensation.to(device).train()
    if ranks.active:
        global_batchnorm(compensation)
    params = [p for p in compensation.parameters() if p.requires_grad]
    compensation.learn_query(config.query == "learned")
    opt = torch.optim.Adam(param_groups(compensation, params, config), lr=config.lr, weight_decay=config.weight_decay)
    total = total_steps(config, tasks)
    state = TrainState(RSC_TRAIN_STATE_FORMAT, {"rsc": compensation}, {"": opt}, {"torch": torch.default_generator})
    step = state.load(existing_train_state(output), config, _RESUME_KEYS) if resume else 0
    while step < total:
        grads, reports = [], []
        compensation.set_tau(gumbel_tau(config, step, total))
        for index, task in enumerate(tasks):
            batch, shard = task.batch(index, step, config.batch_size, config.seed, device, ranks)
            compensation.noise_rows((shard.start, shard.total) if ranks.active else None)
            with _autocast(config, device):
                loss, report = task_step(base, compensation, task.backend, batch, config.delta,
                                         lambda value: ranks.batch_mean(value, shard), config.task_input == "clamped",
                                         config.fidelity)
            grads.append(_flat_grad(loss, params))
            report.step = step + 1
            reports.append(report)
        _assign_grad(combine(ranks.average(torch.stack(grads)), config.cagrad_lambda, config.solver), params)
        clip_gradients(compensation, params, config)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if on_step is not None:
            on_step(reports, total)
        if ranks.is_main and (step % config.checkpoint_every == 0 or step == total):
            if on_checkpoint is not None:
                on_checkpoint(step)
            state.save(train_state_path(output), step, config.hyper(), {"tasks": [asdict(t) for t in config.tasks]})
    compensation.noise_rows(None)
    compensation.learn_query(False)
    compensation.set_tau(config.tau)
    return compensation.eval()


def load_tasks(entries: list[TaskEntry], device: torch.device, trust: bool = False) -> list[LoadedTask]:
    """Resolve each entry's plugin, load its frozen network and its training split.

    ``trust`` (--trust-checkpoint) lets a plugin unpickle task weights in full."""
    from cldyn_cli.api import require_weights
    from cldyn_cli.plugins import get_task
    from cldyn_cli.tasks import TaskOptions

    loaded = []
    for entry in entries:
        spec = get_task(entry.plugin)
        options = TaskOptions(weights=Path(entry.weights) if entry.weights else None,
                              config=Path(entry.config) if entry.config else None,
                              device=device, feature_layer=entry.feature_layer, trust=trust)
        require_weights(options, spec.name)
        backend = spec.load(options)
        dataset = backend.dataset(Path(entry.data), entry.split)
        if len(dataset) == 0:
            raise UserError(f"task {spec.name!r}: no samples in split {entry.split!r} of {entry.data}")
        loaded.append(LoadedTask(entry, backend, dataset))
    return loaded
