"""Training CTDNet-18 (`cldyn ctdnet train`), after the authors' trainer, resumable exactly.

As in their ``train.py``: SGD with Nesterov momentum 0.9 and weight decay 5e-4, base learning rate
0.05 for the decoder and a tenth of it for an ImageNet-initialised encoder, a triangular schedule
(linear warm-up to the peak at mid-training, then linear decay), random crops that cut up to 1/8 of
each side, random horizontal flips, and the full deep-supervision loss. Differences: the schedule
is applied per step rather than per epoch (short runs still warm up and decay), images are resized
to one fixed size instead of a random one of 224..352 per batch, and the encoder's learning rate is
not reduced when it starts from scratch (``backbone_lr_scale`` = 1, the CLI's default without
``--backbone-weights``).

The images CTDNet learns from are, by default, fused by the base fusion network from the
(augmented, resized) thermal/visible pair, exactly as the closed loop later shows it fused images;
``inputs="rgb"`` trains on the visible images instead.

Batch order is a seeded permutation per epoch, augmentation draws come from one generator whose
state is checkpointed with the weights, BatchNorm statistics and momentum buffers, so a run resumed
from its periodic checkpoint ends with exactly the weights of an uninterrupted run on the CPU.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from cldyn_cli.plugin_api import (TrainState, UserError, VFN, batch_indices, existing_train_state, metadata_json,
                                  train_state_path)

from cldyn_plugin_ctdnet.data import RawSample, SodDataset, collate, finish
from cldyn_plugin_ctdnet.loss import ctdnet_loss
from cldyn_plugin_ctdnet.network import CTDNet, CTDNetConfig, build_net, preprocess
from cldyn_plugin_ctdnet.weights import TRAIN_STATE_FORMAT, load_backbone

StepCallback = Callable[[int, int, float, float], None]  # (step, total, loss, decoder lr)
INPUTS = ("fused", "rgb")


@dataclass
class TrainConfig:
    """Hyper-parameters of `cldyn ctdnet train` (the authors' values, batch size aside)."""

    size: int = 352
    batch_size: int = 16  # the authors used 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    backbone_lr_scale: float = 0.1
    epochs: int = 40
    steps: Optional[int] = None  # when set, overrides epochs
    seed: int = 0
    inputs: str = "fused"  # "fused" (base fusion of the pair) or "rgb" (the visible image)
    split: str = "train"
    checkpoint_every: int = 50

    def total_steps(self, n: int) -> int:
        return self.steps if self.steps is not None else self.epochs * (n // min(self.batch_size, n))


# Settings that must not change between a run and its resumption.
_RESUME_KEYS = ("size", "batch_size", "lr", "momentum", "weight_decay", "backbone_lr_scale", "seed", "inputs",
                "split")


def lr_factor(step: int, total: int) -> float:
    """The authors' triangular schedule, per step: rises to 1 at mid-training, falls back to ~0."""
    return 1 - abs((step + 1) / (total + 1) * 2 - 1)


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, high, (1,), generator=gen)) if high > 0 else 0


def augment(raw: RawSample, gen: torch.Generator) -> RawSample:
    """The authors' RandomCrop (cut up to 1/8 of height and width at a random offset) and RandomFlip."""
    h, w = raw.mask.shape[-2:]
    cut_h, cut_w = _randint(h // 8, gen), _randint(w // 8, gen)
    top, left = _randint(cut_h, gen), _randint(cut_w, gen)
    flip = _randint(2, gen) == 0

    def apply(t: Optional[Tensor]) -> Optional[Tensor]:
        if t is None:
            return None
        t = t[..., top:h - cut_h + top, left:w - cut_w + left]
        return t.flip(-1) if flip else t

    return RawSample(apply(raw.ir), apply(raw.vis), apply(raw.mask),  # type: ignore[arg-type]
                     apply(raw.edge), raw.name)


def fused_inputs(base: VFN, ir: Tensor, vis: Tensor) -> Tensor:
    """The base fused RGB image of a batch, as the closed loop computes it."""
    from cldyn_cli.plugin_api import luminance, task_rgb

    with torch.no_grad():
        return task_rgb(base(ir, luminance(vis)), vis)


def model_id(model: torch.nn.Module) -> str:
    """A short fingerprint of a network's weights (to refuse resuming with another base network)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _resume_check(path: Path, total: int, inputs_from: str) -> Callable[[dict[str, str]], None]:
    """Refuse a saved run of another length (the schedule depends on it) or fused by another base."""

    def check(metadata: dict[str, str]) -> None:
        if metadata_json(metadata, "total", path) != total:
            raise UserError(f"cannot resume from {path}: it was a {metadata_json(metadata, 'total', path)}-step run "
                            f"and this one has {total} steps (the learning-rate schedule depends on it); "
                            "use the same --steps/--epochs")
        if metadata.get("inputs_from", "") != inputs_from:
            raise UserError(f"cannot resume from {path}: its images were fused by another base network; "
                            "use the same --fused-with")

    return check


def check_config(config: TrainConfig) -> None:
    if config.inputs not in INPUTS:
        raise UserError(f"unknown inputs {config.inputs!r}; use fused or rgb")
    if config.size < 32:
        raise UserError(f"--size {config.size} is too small; use at least 32 (352 as in CTDNet)")
    if config.batch_size < 2:
        raise UserError("--batch-size must be at least 2: CTDNet's BatchNorm layers train on batch statistics")


def train_ctdnet(data: Path, output: Path, config: TrainConfig, device: torch.device, *,
                 base: Optional[VFN] = None, backbone: Optional[Path] = None, resume: bool = False,
                 on_step: Optional[StepCallback] = None, workers: int = 0) -> CTDNet:
    """Train CTDNet-18 on ``data`` (VT5000 or ir/vis/gt layout), checkpointing to ``train_state_path(output)``.

    ``base`` fuses the training images when ``config.inputs == "fused"``. Returns the trained
    network in eval mode; save it with ``weights.save_ctdnet``. ``workers`` > 0 decodes each batch's
    images in that many threads (augmentation stays in order, so results do not change).
    """
    check_config(config)
    if config.inputs == "fused" and base is None:
        raise ValueError("inputs='fused' needs the base fusion network")
    dataset = SodDataset(data, config.split, size=None)
    if len(dataset) < 2:
        raise UserError(f"{data} has {len(dataset)} training image(s) in split {config.split!r}; CTDNet needs "
                        "at least 2 (BatchNorm)")
    net = build_net(CTDNetConfig(size=config.size, seed=config.seed))
    if backbone is not None:
        load_backbone(net, backbone)
    net = net.to(device).train()
    if base is not None:
        base = base.to(device).eval().requires_grad_(False)
    inputs_from = model_id(base) if config.inputs == "fused" and base is not None else "rgb"

    def sgd(params: list[torch.nn.Parameter]) -> torch.optim.SGD:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=True)

    optimisers = {"bkbone": sgd(list(net.bkbone.parameters())),
                  "decoder": sgd([p for n, p in net.named_parameters() if not n.startswith("bkbone.")])}
    gen = torch.Generator().manual_seed(config.seed)
    total = config.total_steps(len(dataset))
    state = TrainState(TRAIN_STATE_FORMAT, {"model": net}, optimisers, {"augment": gen})
    step = 0
    checkpoint = train_state_path(output)
    if resume:
        state_path = existing_train_state(output)
        step = state.load(state_path, config, _RESUME_KEYS, _resume_check(state_path, total, inputs_from))
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    try:
        while step < total:
            factor = lr_factor(step, total)
            optimisers["bkbone"].param_groups[0]["lr"] = config.lr * config.backbone_lr_scale * factor
            optimisers["decoder"].param_groups[0]["lr"] = config.lr * factor
            # Full batches only: the BatchNorm after CTDNet's global-context pooling needs two samples or more.
            indices = batch_indices(len(dataset), min(config.batch_size, len(dataset)), config.seed, step,
                                    drop_last=True)
            raws = list(pool.map(dataset.raw, indices)) if pool is not None else [dataset.raw(i) for i in indices]
            batch = collate([finish(augment(raw, gen), config.size) for raw in raws])
            ir, vis = batch.ir.to(device), batch.vis.to(device)
            images = fused_inputs(base, ir, vis) if config.inputs == "fused" else vis  # type: ignore[arg-type]
            out = net(preprocess(images, config.size), with_aux=True)
            loss = ctdnet_loss(out, batch.targets["mask"].to(device), batch.targets["edge"].to(device))
            for opt in optimisers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimisers.values():
                opt.step()
            step += 1
            if step % config.checkpoint_every == 0 or step == total:
                state.save(checkpoint, step, asdict(config), {"total": total, "inputs_from": inputs_from})
            if on_step is not None:
                on_step(step, total, loss.item(), config.lr * factor)
    finally:
        if pool is not None:
            pool.shutdown()
    return net.eval()
