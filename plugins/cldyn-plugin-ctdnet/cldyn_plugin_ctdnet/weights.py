"""CTDNet weights: this plugin's safetensors checkpoints, the authors' .pth files, ImageNet backbones.

- ``cldyn ctdnet train`` writes safetensors of format ``cldyn.ctdnet`` (config in the metadata).
- The authors' released CTDNet-18 (``model-40`` etc.) is a pickled state dict; it is read with
  ``torch.load(weights_only=True)`` (no code runs) and loads unchanged, since module names match.
- A torchvision/ImageNet ResNet-18 state dict (``resnet18-*.pth`` or .safetensors) initialises the
  encoder for training (``--backbone-weights``). Nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from cldyn_cli.plugin_api import UserError, atomic_save, build_config as build, load_checkpoint, metadata_json

from cldyn_plugin_ctdnet.network import CTDNet, CTDNetConfig

FORMAT = "cldyn.ctdnet"
TRAIN_STATE_FORMAT = "cldyn.ctdnet.train-state"
_WRAPPERS = ("state_dict", "model", "net", "model_state_dict")


def save_ctdnet(net: CTDNet, path: Path, config: CTDNetConfig, provenance: dict[str, Any]) -> None:
    """Weights plus config and how they were trained, written atomically."""
    atomic_save(net.state_dict(), path, FORMAT, asdict(config), {"provenance": provenance})


def _torch_file(path: Path, what: str) -> dict[str, Tensor]:
    """A pickled state dict, read without running code; wrappers and DataParallel prefixes removed."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read {what} {path} as a PyTorch state dict ({first[:200]})") from None
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} is not a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _as_float32(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # the authors trained with apex O2, so released weights may be float16
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_ctdnet(path: Path) -> tuple[dict[str, Tensor], Optional[CTDNetConfig]]:
    """Tensors and (for our own checkpoints) config of a CTDNet weights file."""
    if path.suffix.lower() == ".safetensors":
        tensors, metadata = load_checkpoint(path, FORMAT)
        config = build(CTDNetConfig, metadata_json(metadata, "config", path), f"the config of {path}")
        return tensors, config
    state = _torch_file(path, "CTDNet weights")
    if not any(k.startswith("fuse23.") for k in state):
        if "conv1.weight" in state or "bkbone.conv1.weight" in state:
            raise UserError(f"{path} holds only a ResNet backbone, not a CTDNet; train one with "
                            "`cldyn ctdnet train --backbone-weights` first")
        raise UserError(f"{path} is not a CTDNet state dict (no fuse23.* weights)")
    return _as_float32(state), None


def load_state(net: CTDNet, state: dict[str, Tensor], path: Path) -> None:
    """Load all of ``state`` into ``net``; any missing, extra or misshapen tensor is a UserError."""
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UserError(f"{path} does not fit CTDNet-18 (ResNet-18 backbone): {detail[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing, e.g. {result.missing_keys[0]}")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[0]}")
        raise UserError(f"{path} does not fit CTDNet-18 (ResNet-18 backbone): {'; '.join(parts)}")


def load_backbone(net: CTDNet, path: Path) -> None:
    """Initialise the encoder from an ImageNet ResNet-18 state dict (.pth or .safetensors)."""
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise UserError(f"backbone weights {path} do not exist; check the path")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"cannot read backbone weights {path} ({str(exc).splitlines()[0]})") from None
    else:
        state = _torch_file(path, "backbone weights")
    state = {(k[7:] if k.startswith("bkbone.") else k): v for k, v in _as_float32(state).items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = net.bkbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UserError(f"{path} is not a ResNet-18 state dict: {detail[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise UserError(f"{path} is not a ResNet-18 state dict ({len(result.missing_keys)} missing, "
                        f"{len(result.unexpected_keys)} unexpected tensors, e.g. {example})")


def load_ctdnet(path: Optional[Path], overrides: Optional[dict[str, Any]] = None) -> tuple[CTDNet, CTDNetConfig]:
    """A network from ``path`` (ours or the authors'), or seeded and untrained without one.

    ``overrides`` (the keys of a ``--task-config`` YAML) beat the checkpoint's config: the input
    size is not a weight, and ``seed`` only matters without weights.
    """
    from cldyn_plugin_ctdnet.network import build_net

    overrides = overrides or {}
    if path is None:
        config = build(CTDNetConfig, overrides, "--task-config")
        return build_net(config), config
    state, saved = read_ctdnet(path)
    build(CTDNetConfig, overrides, "--task-config")  # unknown keys are errors
    config = replace(saved or CTDNetConfig(), **overrides)
    net = CTDNet()
    load_state(net, state, path)
    return net, config
