"""Training the base fusion network: random crops with flips/rotations, Adam, the loss of docs/method.md.

Every source of randomness is seeded and checkpointed (batch order is a function of the seed and
the epoch; augmentation draws come from one generator whose state is saved), so a run resumed
from a periodic checkpoint ends with exactly the weights of an uninterrupted run on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from cldyn_cli.checkpoint import TRAIN_STATE_FORMAT, existing_train_state, train_state_path
from cldyn_cli.colour import luminance
from cldyn_cli.config import setting
from cldyn_cli.data.images import read_image, read_infrared
from cldyn_cli.data.pairs import Pair, check_sizes
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import to_tensor
from cldyn_cli.losses import GRADIENT_TARGETS, GRADIENT_WEIGHT, INTENSITY_WEIGHT, fusion_loss
from cldyn_cli.models.prior import PRIORS
from cldyn_cli.models.vfn import VFN, VFNConfig, batchnorm_shadowed_biases
from cldyn_cli.runtime import TRAINING_BLOCKS, reuse_freed_memory
from cldyn_cli.training.distributed import SINGLE, Ranks, check_batches, data_parallel
from cldyn_cli.training.state import TrainState

StepCallback = Callable[[int, int, float], None]  # (step, total, loss)
MIN_CROP = 16  # smaller crops leave the dilated, reflect-padded convolutions no room
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainBaseConfig:
    """Hyper-parameters of `cldyn train-base` (the reference values of docs/method.md by default)."""

    crop: int = setting(256, min=MIN_CROP)
    batch_size: int = setting(16, min=1)
    lr: float = setting(1e-3, above=0)
    epochs: int = setting(100, min=1)
    steps: Optional[int] = setting(None, min=1)  # when set, overrides epochs
    blocks: int = setting(4, min=1)
    seed: int = setting(0, min=0)
    checkpoint_every: int = setting(200, min=1)
    intensity_weight: float = setting(INTENSITY_WEIGHT, min=0)
    gradient_weight: float = setting(GRADIENT_WEIGHT, min=0)
    gradient_target: str = setting("sobel_max", choices=GRADIENT_TARGETS)  # what the texture term compares (losses.py)
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES)  # cosine: decay to 0 over the run
    stretch: bool = False  # the saved model stretches its output to [0, 1] (training sees the raw output)
    stretch_clip: float = setting(0.0, min=0, max=0.49)  # fraction of pixels the stretch may saturate at each end
    residual: bool = False  # the network corrects a prior image rather than drawing the fused image from scratch
    prior: str = setting("max", choices=PRIORS)  # the image a residual network corrects (models/prior.py)

    def total_steps(self, n_pairs: int) -> int:
        return self.steps if self.steps is not None else self.epochs * math.ceil(n_pairs / self.batch_size)


# Settings that must not change between a run and its resumption.
_RESUME_KEYS = ("crop", "batch_size", "lr", "blocks", "seed", "intensity_weight", "gradient_weight",
                "gradient_target", "lr_schedule", "residual", "prior")


def learning_rate(config: TrainBaseConfig, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) out of ``total``: constant, or cosine-decayed to 0."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
    return config.lr


class PairStore:
    """Decoded pairs as 8-bit luminance arrays, read once and kept (small memory, fast crops)."""

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs
        self.sizes = check_sizes(pairs)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._cache:
            pair = self.pairs[i]
            vis_y = luminance(to_tensor(read_image(pair.vis)))[0, 0].numpy()
            ir = read_infrared(pair.ir)
            self._cache[i] = ((ir * 65535 + 0.5).astype(np.uint16), (vis_y * 65535 + 0.5).astype(np.uint16))
        ir, vis = self._cache[i]
        return ir.astype(np.float32) / 65535, vis.astype(np.float32) / 65535


def batch_indices(n: int, batch_size: int, seed: int, step: int, drop_last: bool = False) -> list[int]:
    """Indices of training step ``step``: a seeded permutation per epoch, cut into batches.

    With ``drop_last`` each epoch's short remainder is skipped (for networks whose BatchNorm needs
    full batches).
    """
    per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    epoch, b = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[b * batch_size:(b + 1) * batch_size].tolist()


Augmentation = tuple[int, int, int, int]  # crop corner y, x; flip; quarter-turns


def draw_augmentation(size: tuple[int, int], crop: int, gen: torch.Generator) -> Augmentation:
    """The random crop corner, flip and quarter-turn for an image of ``size`` (H, W).

    Drawn apart from the pixels, so that under torchrun every rank draws for the whole global batch
    (the generator stays the same everywhere) but reads only its own images.
    """
    h, w = size
    y = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
    flip, turns = torch.randint(0, 2, (1,), generator=gen).item(), torch.randint(0, 4, (1,), generator=gen).item()
    return y, x, int(flip), int(turns)


def augmented_crop(ir: np.ndarray, vis: np.ndarray, crop: int, draw: Augmentation) -> torch.Tensor:
    """The square crop of both images with the flip and quarter-turn of ``draw``, (2, crop, crop)."""
    y, x, flip, turns = draw
    t = torch.from_numpy(np.stack([ir[y:y + crop, x:x + crop], vis[y:y + crop, x:x + crop]]))
    if flip:
        t = t.flip(-1)
    return torch.rot90(t, int(turns), dims=(-2, -1))


def usable_crop(pairs: list[Pair], crop: int) -> int:
    """The crop size, shrunk to the smallest training image when needed."""
    (height, width), pair = min(zip(check_sizes(pairs), pairs), key=lambda item: min(item[0]))
    if min(height, width) < MIN_CROP:
        raise UserError(f"training image {pair.vis} is {width}x{height}; train-base needs images of at least "
                        f"{MIN_CROP}x{MIN_CROP}")
    return min(crop, height, width)


def optimise_step(model: nn.Module, opt: torch.optim.Optimizer, shadowed: list[nn.Parameter], batch: torch.Tensor,
                  config: TrainBaseConfig, lr: float,
                  mean: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss) -> torch.Tensor:
    """One Adam step on a (B, 2, H, W) batch of (IR, visible Y) crops; returns the loss.

    ``mean`` turns this process's loss into the global batch's (under torchrun); ``shadowed`` are
    the biases whose gradient is zero in exact arithmetic (:func:`batchnorm_shadowed_biases`).
    """
    ir, vis_y = batch[:, 0:1], batch[:, 1:2]
    fused = model(ir, vis_y, stretch=False)
    loss = mean(fusion_loss(fused, ir, vis_y, config.intensity_weight, config.gradient_weight,
                            config.gradient_target))
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for bias in shadowed:  # zero in exact arithmetic; left as float noise, runs would differ by summation order
        bias.grad.zero_()
    opt.step()
    return loss


def train_base(pairs: list[Pair], output: Path, config: TrainBaseConfig, device: torch.device,
               resume: bool = False, on_step: Optional[StepCallback] = None, ranks: Ranks = SINGLE,
               on_checkpoint: Optional[Callable[[int], None]] = None) -> VFN:
    """Train a VFN on ``pairs``, checkpointing to ``train_state_path(output)``; returns the trained model.

    Under torchrun (``ranks``) each rank trains on its share of every global batch and only rank 0
    writes; the weights are those of one process with the same global batch. ``on_checkpoint(step)``
    runs on rank 0 just before each state save, so that what it writes (the log) is never behind
    the state a resumed run starts from.
    """
    if not pairs:
        raise UserError("no training pairs found")
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"lr_schedule {config.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    if config.prior != "max" and not config.residual:
        raise UserError(f"prior {config.prior!r} is for residual models: add --residual")
    check_batches([len(pairs)], config.batch_size, ranks)
    store = PairStore(pairs)
    if device.type == "cpu":
        reuse_freed_memory(TRAINING_BLOCKS)
    torch.manual_seed(config.seed)
    # Channels-last runs the narrow (8-32 channel) convolutions faster on CPU, in training too.
    model = VFN(VFNConfig(blocks=config.blocks, stretch=config.stretch,
                            stretch_clip=config.stretch_clip, residual=config.residual, prior=config.prior))
    model = model.to(device, memory_format=torch.channels_last).train()
    parallel = data_parallel(model, ranks, device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    shadowed = batchnorm_shadowed_biases(model)
    gen = torch.Generator().manual_seed(config.seed)
    total = config.total_steps(len(store))
    state = TrainState(TRAIN_STATE_FORMAT, {"model": model}, {"": opt}, {"augment": gen})
    step = state.load(existing_train_state(output), config, _RESUME_KEYS) if resume else 0
    while step < total:
        indices = batch_indices(len(store), config.batch_size, config.seed, step)
        draws = [draw_augmentation(store.sizes[i], config.crop, gen) for i in indices]
        shard = ranks.shard(len(indices))
        crops = [augmented_crop(*store.get(i), config.crop, draw)
                 for i, draw in zip(indices[shard.start:shard.stop], draws[shard.start:shard.stop])]
        batch = torch.stack(crops)
        if device.type == "cuda":  # page-locked, so that the copy to the GPU can overlap the step
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        loss = optimise_step(parallel, opt, shadowed, batch, config, learning_rate(config, step, total),
                             lambda batch_loss: ranks.batch_mean(batch_loss, shard))  # noqa: B023
        step += 1
        if on_step is not None:
            on_step(step, total, loss.item())
        if ranks.is_main and (step % config.checkpoint_every == 0 or step == total):
            if on_checkpoint is not None:
                on_checkpoint(step)
            state.save(train_state_path(output), step, asdict(config))
    return model.eval()
