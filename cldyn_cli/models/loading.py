"""Saving and loading base networks, and the default model shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from cldyn_cli.checkpoint import BASE_FORMAT, atomic_save, load_checkpoint, metadata_json
from cldyn_cli.config import build
from cldyn_cli.errors import UserError
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
