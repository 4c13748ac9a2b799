"""`cldyn info FILE`: what a checkpoint is, its config, how it was made and with which plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from safetensors import safe_open

from cldyn_cli.checkpoint import read_metadata
from cldyn_cli.ui import user_errors

KINDS = {
    "cldyn.vfn": "base fusion network (VFN), from `cldyn train-base`; use with --base",
    "cldyn.vfn.train-state": "resumable state of a `cldyn train-base` run; continue with --resume",
    "cldyn.rsc": "task compensation with its base network, from `cldyn compensate`; use with fuse --rsc",
    "cldyn.rsc.train-state": "resumable state of a `cldyn compensate` run; continue with --resume",
}


def _value(text: str) -> Any:
    """Metadata values are JSON where cldyn wrote structured data, plain strings otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def describe(path: Path) -> dict[str, Any]:
    """The checkpoint's kind, parameter count and metadata (JSON values decoded)."""
    metadata = read_metadata(path)
    with safe_open(str(path), framework="pt") as handle:
        numbers = sum(_product(handle.get_slice(key).get_shape()) for key in handle.keys())
    fmt = metadata.get("format", "")
    kind = KINDS.get(fmt) or (f"a {fmt!r} checkpoint (written by a plugin)" if fmt else "not a cldyn checkpoint")
    return {"file": str(path), "kind": kind, "numbers": numbers,
            "metadata": {key: _value(value) for key, value in sorted(metadata.items())}}


def _product(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


@user_errors
def info(
    file: Annotated[Path, typer.Argument(help="A .safetensors file written by cldyn or a cldyn plugin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as one JSON object.")] = False,
) -> None:
    """Show what a checkpoint is: its kind, config, provenance and the versions it was made with.

    Compensations also list their tasks and the task plugins' versions at training time.
    """
    about = describe(file)
    if as_json:
        typer.echo(json.dumps(about, indent=2))
        return
    typer.echo(f"{about['file']}: {about['kind']}")
    typer.echo(f"  {about['numbers']:,} stored numbers")
    for key, value in about["metadata"].items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
        lines = text.splitlines() or [""]
        typer.echo(f"  {key}: {lines[0]}")
        for line in lines[1:]:
            typer.echo(f"    {line}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)
