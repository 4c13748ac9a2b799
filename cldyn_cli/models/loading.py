"""Saving and loading networks: base models, the shipped default, and trained compensations."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from cldyn_cli.checkpoint import BASE_FORMAT, RSC_FORMAT, atomic_save, load_checkpoint, metadata_json
from cldyn_cli.config import build
from cldyn_cli.errors import UserError
from cldyn_cli.models.convert import convert_authors_rsc_checkpoint
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.models.vfn import VFN, VFNConfig

EMBEDDED_BASE = "base_vfn.safetensors"


def embedded_base_path() -> Path:
    """Path of the default base model that ships in the package."""
    return Path(str(resources.files("cldyn_cli") / "weights" / EMBEDDED_BASE))


def save_vfn(model: VFN, path: Path, provenance: dict[str, Any]) -> None:
    """Write a base model with its config and how it was trained."""
    atomic_save(model.state_dict(), path, BASE_FORMAT, model.config.to_dict(), {"provenance": provenance})


def load_vfn(path: Path | None = None, device: torch.device | str = "cpu") -> tuple[VFN, dict[str, str]]:
    """A base model in eval mode from ``path`` (default: the embedded model), with its metadata."""
    path = embedded_base_path() if path is None else path
    tensors, metadata = load_checkpoint(path, BASE_FORMAT)
    config = build(VFNConfig, metadata_json(metadata, "config", path), f"the config of {path}")
    model = VFN(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise UserError(f"{path} does not match its own config ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), metadata


def save_compensation(compensation: SemanticCompensation, base: VFN, path: Path, extra: dict[str, Any]) -> None:
    """Write a trained compensation together with the base network it was trained on.

    The base is small (about 47k parameters) and the compensation only makes sense on top of it,
    so the file is self-contained: `cldyn fuse --rsc FILE` needs nothing else from training.
    """
    tensors = {f"rsc.{k}": v for k, v in compensation.state_dict().items()}
    tensors.update({f"base.{k}": v for k, v in base.state_dict().items()})
    atomic_save(tensors, path, RSC_FORMAT, compensation.config.to_dict(),
                {"base_config": base.config.to_dict(), **extra})


def load_compensation(path: Path, device: torch.device | str = "cpu"
                      ) -> tuple[SemanticCompensation, VFN, dict[str, str]]:
    """Compensation and its base network (both in eval mode) from a `cldyn compensate` file."""
    tensors, metadata = load_checkpoint(path, RSC_FORMAT)
    try:
        rsc_config = RSCConfig.from_dict(metadata_json(metadata, "config", path), f"the config of {path}")
        compensation = SemanticCompensation(rsc_config)
        base = VFN(build(VFNConfig, metadata_json(metadata, "base_config", path), f"the base config of {path}"))
        compensation.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("rsc.")})
        base.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("base.")})
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path} does not match its own config ({str(exc).splitlines()[0]})") from None
    return compensation.to(device).eval(), base.to(device).eval(), metadata


def load_authors_compensation(path: Path, device: torch.device | str = "cpu") -> SemanticCompensation:
    """A compensation (eval mode) from an RSC checkpoint of the authors' training script (``ckpt_*.pth``).

    Their file holds no base network and no task, so it gives the compensation alone. It is a pickle:
    it is read with ``weights_only`` (tensors and containers, no code).
    """
    if not path.is_file():
        raise UserError(f"authors' RSC checkpoint {path} does not exist; check the path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a foreign file; all mean "not their checkpoint"
        raise UserError(f"{path} is not a PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    try:
        if not isinstance(checkpoint, dict):
            raise ValueError("not an RSC checkpoint of the authors' code: it holds no dict")
        config, state = convert_authors_rsc_checkpoint(checkpoint)
        compensation = SemanticCompensation(config)
        compensation.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:  # load_state_dict says what differs on its second line
        raise UserError(f"{path}: " + " ".join(line.strip() for line in str(exc).splitlines()[:2])) from None
    return compensation.to(device).eval()
