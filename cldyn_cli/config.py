"""YAML configuration files mapped onto typed dataclasses; unknown keys are rejected, not ignored."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cldyn_cli.errors import UserError

T = TypeVar("T")


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return data


def build(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Instantiate dataclass ``cls`` from ``values``, naming ``source`` in errors for unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {source}; known: {', '.join(sorted(names))}")
    return cls(**values)


def with_overrides(base: T, overrides: dict[str, Any]) -> T:
    """``base`` with every override that is not None (command-line flags beat the config file)."""
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]


def load_config(cls: type[T], path: Path | None, overrides: dict[str, Any]) -> T:
    """Defaults, then the YAML file (if any), then the flags the user gave."""
    config = build(cls, read_yaml(path), str(path)) if path is not None else cls()
    return with_overrides(config, overrides)

