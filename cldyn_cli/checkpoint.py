"""Checkpoints as safetensors with string metadata: format, cldyn version, config, provenance.

Only tensors and strings are stored, so loading never unpickles anything. Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cldyn_cli import __version__
from cldyn_cli.errors import UserError
from cldyn_cli.outputs import atomic_path, check_new_files, check_writable

BASE_FORMAT = "cldyn.vfn"
TRAIN_STATE_FORMAT = "cldyn.vfn.train-state"


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, fmt: str, config: dict[str, Any],
                extra: dict[str, Any] | None = None) -> None:
    """Write tensors plus metadata to ``path`` via a temporary file in the same folder."""
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name such as {path / 'model.safetensors'}")
    metadata = {"format": fmt, "cldyn_version": __version__, "config": json.dumps(config, sort_keys=True)}
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def source_commit() -> str | None:
    """The git commit of the cldyn source that is running (suffixed "+dirty" for uncommitted changes),
    or None for an installed copy outside git; recorded in provenance so that a model can be remade."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file; a missing, foreign or corrupt file is a UserError."""
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; give a .safetensors file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({str(exc).splitlines()[0]})") from None


def load_checkpoint(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint that must be of format ``fmt``."""
    metadata = read_metadata(path)
    found = metadata.get("format")
    if found != fmt:
        what = f"a {found!r} checkpoint" if found else "not a cldyn checkpoint"
        raise UserError(f"{path} is {what}; expected {fmt!r} (e.g. one written by the matching cldyn command)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt ({str(exc).splitlines()[0]}); write it again") from None
    return tensors, metadata


def train_state_path(output: Path) -> Path:
    """Where the resumable training state of a run writing ``output`` lives (beside it)."""
    return output.with_name(output.stem + ".train-state.safetensors")


def existing_train_state(output: Path) -> Path:
    """The training state to resume from; a clear error when there is none yet."""
    path = train_state_path(output)
    if not path.exists():
        raise UserError(f"--resume given but {path} does not exist; run without --resume first")
    return path


def check_run_files(output: Path, log: Path, resume: bool, overwrite: bool) -> None:
    """Refuse before any work a training run whose files (model, state, log) cannot be written,
    would replace existing ones without --overwrite, or that asks to --resume with no state."""
    files = {"--output": output, "training state": train_state_path(output), "--log": log}
    for what, path in files.items():
        check_writable(path, what)
    if resume:
        existing_train_state(output)
    else:
        check_new_files(list(files.values()), overwrite)


def resumed_step(output: Path, resume: bool) -> int:
    """The step a run writing ``output`` starts from: the saved one when resuming, else 0."""
    state = train_state_path(output)
    return int(read_metadata(state).get("step", 0)) if resume and state.exists() else 0


def check_resumable(saved: dict, config: object, keys: tuple[str, ...], path: Path) -> None:
    """Refuse to resume when a setting that shapes the run differs from the saved one.

    A key the saved state lacks was added to cldyn after that state was written: the run then
    used the setting's default, so the state counts as saved with the default.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    as_saved = {k: saved[k] if k in saved else defaults.get(k) for k in keys}
    changed = [k for k in keys if as_saved[k] != getattr(config, k)]
    if changed:
        detail = ", ".join(f"{k}={as_saved[k]!r}" for k in changed)
        raise UserError(f"cannot resume from {path}: it was trained with {detail}; use the same settings")


def incomplete_state(path: Path, exc: Exception) -> UserError:
    """The error for a training state that lacks tensors a resumed run needs (or holds wrong ones)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"{path} is not a complete training state ({type(exc).__name__}: {detail[:120]}); "
                     "delete it and run without --resume")


def metadata_json(metadata: dict[str, str], key: str, path: Path) -> Any:
    """A JSON-valued metadata entry, with a clear error when it is missing or malformed."""
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"{path} lacks valid {key!r} metadata; it was not written by cldyn") from None

RSC_FORMAT = "cldyn.rsc"
RSC_TRAIN_STATE_FORMAT = "cldyn.rsc.train-state"
