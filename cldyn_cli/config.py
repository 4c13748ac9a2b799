"""Declared configuration schemas: one check for flags, YAML files and checkpoint metadata.

A config is a dataclass; each field's type comes from its annotation and its allowed range from
:func:`setting` (``min``, ``max``, ``above``, ``multiple``, ``choices``). :func:`build` (YAML, metadata) and
:func:`with_overrides` (flags) both run every value through :func:`check_value`, so a value that a
flag refuses is refused in a file too. YAML reads ``1e-3`` as a string; numbers written so are
coerced. Unknown keys are rejected, not ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cldyn_cli.errors import UserError

T = TypeVar("T")


def setting(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
            above: float | None = None, multiple: int | None = None,
            choices: tuple[Any, ...] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a declared range: ``min``/``max`` inclusive, ``above`` exclusive."""
    bounds = {k: v for k, v in dict(min=min, max=max, above=above, multiple=multiple,
                                                             choices=choices).items() if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds}, **kwargs)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    if path.is_dir():
        raise UserError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return data


def _label(name: str, source: str | None) -> str:
    """How an error names a setting: ``--batch-size`` for a flag, ``batch_size in FILE`` otherwise."""
    return f"--{name.replace('_', '-')}" if source is None else f"{name} in {source}"


def _coerce(value: Any, kind: Any, label: str) -> Any:
    """``value`` as ``kind`` (int, float, bool, str, Optional of one), or a UserError naming ``label``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        kind = rest[0] if len(rest) == 1 else Any
    if kind is int:
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value.lower() for c in ".e") else int(value)
            except ValueError:
                pass
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{label} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{label} must be a finite number, got {value!r}")
        value = float(value)
    elif kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{label} must be true or false, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise UserError(f"{label} must be a string, got {value!r}")
    return value


def check_value(field: dataclasses.Field, kind: Any, value: Any, source: str | None) -> Any:
    """``value`` coerced to the field's type and checked against its declared bounds."""
    label = _label(field.name, source)
    value = _coerce(value, kind, label)
    if value is None:
        return None
    bounds = field.metadata.get("bounds", {})
    if "choices" in bounds and value not in bounds["choices"]:
        raise UserError(f"{label} must be one of {', '.join(map(str, bounds['choices']))}, got {value!r}")
    if "min" in bounds and value < bounds["min"]:
        raise UserError(f"{label} must be at least {bounds['min']}, got {value}")
    if "above" in bounds and value <= bounds["above"]:
        raise UserError(f"{label} must be greater than {bounds['above']}, got {value}")
    if "max" in bounds and value > bounds["max"]:
        raise UserError(f"{label} must be at most {bounds['max']}, got {value}")
    if "multiple" in bounds and value % bounds["multiple"]:
        raise UserError(f"{label} must be a multiple of {bounds['multiple']}, got {value}")
    return value


def checked(cls: type, values: dict[str, Any], source: str | None) -> dict[str, Any]:
    """``values`` with each one checked against ``cls``'s declared field (``source`` None: flags)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(map(str, unknown))} in {source}; "
                        f"known: {', '.join(sorted(fields))}")
    return {k: check_value(fields[k], hints[k], v, source) for k, v in values.items()}


def build(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Instantiate dataclass ``cls`` from ``values`` (a file or metadata named ``source``), checked."""
    if not isinstance(values, dict):
        raise UserError(f"{source} must be a mapping of setting: value")
    return cls(**checked(cls, values, source))


def with_overrides(base: T, overrides: dict[str, Any]) -> T:
    """``base`` with every override that is not None (command-line flags beat the config file)."""
    given = checked(type(base), {k: v for k, v in overrides.items() if v is not None}, None)
    return dataclasses.replace(base, **given)  # type: ignore[type-var]


def load_config(cls: type[T], path: Path | None, overrides: dict[str, Any]) -> T:
    """Defaults, then the YAML file (if any), then the flags the user gave."""
    config = build(cls, read_yaml(path), str(path)) if path is not None else cls()
    return with_overrides(config, overrides)

