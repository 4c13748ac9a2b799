"""Data-parallel training under ``torchrun``: process group, batch shards, global statistics.

A run launched by ``torchrun --nproc-per-node N`` does the arithmetic of one process with the same
global batch, so its weights match a single-process run to float rounding:

- every rank computes the seed-determined global batch and keeps its contiguous share of it
  (shares differ by at most one sample; each rank needs at least one);
- BatchNorm in training mode normalises with the statistics of the whole global batch
  (:class:`GlobalBatchNorm2d`, which also works with gloo on the CPU, unlike ``nn.SyncBatchNorm``);
- batch-mean losses are the ranks' means weighted by their shares (:func:`Ranks.batch_mean`), and
  gradients are averaged, by DistributedDataParallel or by :func:`Ranks.average`.

Backends: nccl on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``), gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from cldyn_cli.errors import UserError


@dataclass(frozen=True)
class Shard:
    """This rank's rows [start, stop) of a global batch of ``total`` samples."""

    start: int
    stop: int
    total: int

    @property
    def share(self) -> float:
        """The fraction of the global batch held here (the weight of this rank's batch mean)."""
        return (self.stop - self.start) / self.total


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, total: int) -> Shard:
        """Contiguous rows of a global batch of ``total``; the first ``total % N`` ranks get one more."""
        if self.active and total < self.world_size:
            raise UserError(f"a batch of {total} cannot be split across {self.world_size} ranks; "
                            "use a batch size (and dataset size) that gives every rank a sample")
        size, extra = divmod(total, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return Shard(start, start + size + (self.rank < extra), total)

    def batch_mean(self, value: torch.Tensor, shard: Shard) -> torch.Tensor:
        """The global batch mean of a per-rank batch mean, differentiably.

        Like DistributedDataParallel, gradients are then averaged over ranks (all ranks hold the
        same global value, so its gradient flows back N times and the average divides by N).
        """
        if not self.active:
            return value
        return all_reduce_sum(value * shard.share)

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks (for gradients computed with ``torch.autograd.grad``)."""
        if not self.active:
            return tensor
        tensor = tensor.contiguous()
        dist.all_reduce(tensor)
        return tensor / self.world_size


SINGLE = Ranks()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients.

    Every rank's loss may depend on every rank's input; with gradients averaged afterwards (the
    DistributedDataParallel convention) this gives the gradient of the mean of the ranks' losses.
    """

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over all ranks."""
    return _AllReduceSum.apply(tensor)


def check_batches(dataset_sizes: list[int], batch_size: int, ranks: Ranks) -> None:
    """Refuse, before training, a run in which some step's global batch has fewer samples than ranks."""
    if not ranks.active:
        return
    for n in dataset_sizes:
        smallest = n % batch_size or batch_size  # the last batch of an epoch
        if smallest < ranks.world_size:
            raise UserError(f"with {ranks.world_size} ranks every step needs at least {ranks.world_size} samples, "
                            f"but {n} samples in batches of {batch_size} leave {smallest} in the last batch of an "
                            "epoch; change --batch-size or the number of ranks")


def _torchrun_ranks() -> Ranks:
    try:
        return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    except (KeyError, ValueError):
        return SINGLE


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join torchrun's process group (when launched by torchrun with several processes).

    Yields this process's ranks and its device: under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    Without torchrun (or with one process) nothing changes.
    """
    ranks = _torchrun_ranks()
    if not ranks.active:
        yield SINGLE, device
        return
    if device.type == "cuda":
        if device.index is not None:
            raise UserError(f"under torchrun each rank uses the GPU cuda:LOCAL_RANK; pass --device cuda, "
                            f"not {device}")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield ranks, device
        # Leave together: a rank that tears gloo down while a peer still talks to it can abort (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics (and running averages) cover the global batch of all ranks.

    Outside a multi-process run, or in eval mode, it is exactly ``nn.BatchNorm2d``. The mean and the
    variance are two-pass (mean first, then the mean squared deviation), as one process computes them;
    the reductions are differentiable all-reduces, so the gradient is that of the global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce_sum(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce_sum(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d turned into a :class:`GlobalBatchNorm2d` (same state, in place)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats, device=_device_of(child))
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            global_batchnorm(child)
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else None


def data_parallel(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (global BatchNorm first) in a multi-process run."""
    if not ranks.active:
        return model
    model = global_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
