"""The resumable state of a training run, saved and restored in one place for every trainer.

A run names what it must carry over: modules (``"model"``, ``"rsc"``), optimisers (their
per-parameter state; hyper-parameters come from the run's config) and random generators
(``torch.default_generator`` stands for the global one). Everything is stored as tensors in a
safetensors file with the run's config, so resuming unpickles nothing, and a resumed run is
refused when a setting that shapes it (``resume_keys``) has changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from cldyn_cli.checkpoint import atomic_save, check_resumable, incomplete_state, load_checkpoint, metadata_json


def _all_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state (all parameter groups) as ``optim.{index}.{key}`` tensors."""
    out = {}
    for i, p in enumerate(_all_params(opt)):
        for key, value in opt.state.get(p, {}).items():
            out[f"optim.{i}.{key}"] = torch.as_tensor(value)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    for i, p in enumerate(_all_params(opt)):
        state = {k.split(".")[2]: v.clone() if k.endswith(".step") else v.to(p.device)
                 for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
        if state:
            opt.state[p] = state


def _prefixed(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


@dataclass
class TrainState:
    """What a run saves to resume exactly: named modules, optimisers and random generators.

    An optimiser named ``""`` stores its tensors as ``optim.*``; one named ``"decoder"`` as
    ``decoder.optim.*`` (for runs with several optimisers).
    """

    fmt: str  # checkpoint format, e.g. "cldyn.vfn.train-state"
    modules: dict[str, nn.Module]
    optimisers: dict[str, torch.optim.Optimizer]
    generators: dict[str, torch.Generator] = field(default_factory=dict)

    def save(self, path: Path, step: int, config: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> None:
        """Write the state reached after ``step`` steps atomically, with the run's config."""
        tensors: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, opt in self.optimisers.items():
            tensors.update({_prefixed(name, k): v for k, v in optimizer_tensors(opt).items()})
        for name, gen in self.generators.items():
            tensors[f"rng.{name}"] = gen.get_state()
        atomic_save(tensors, path, self.fmt, config, {"step": step, **(extra or {})})

    def load(self, path: Path, config: object, resume_keys: tuple[str, ...],
             check: Optional[Callable[[dict[str, str]], None]] = None) -> int:
        """Restore everything from ``path`` and return the step it had reached.

        Nothing is changed when ``config`` differs from the saved one in any of ``resume_keys``, or
        when ``check`` (given the file's metadata) raises; a file that lacks tensors the run needs
        is a UserError.
        """
        tensors, metadata = load_checkpoint(path, self.fmt)
        check_resumable(metadata_json(metadata, "config", path), config, resume_keys, path)
        if check is not None:
            check(metadata)
        try:
            for name, module in self.modules.items():
                module.load_state_dict(_strip(tensors, name))
            for name, opt in self.optimisers.items():
                restore_optimizer(opt, _strip(tensors, name) if name else tensors)
            for name, gen in self.generators.items():
                gen.set_state(tensors[f"rng.{name}"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # a state file missing tensors
            raise incomplete_state(path, exc) from None
        return int(metadata_json(metadata, "step", path))
