"""Shared pieces of every command, core or plugin: user-error handling, option types, progress, devices.

It lives outside `cldyn_cli.cli` so that plugin command modules can import it without building the app."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cldyn_cli.errors import UserError

F = TypeVar("F", bound=Callable)

stderr = Console(stderr=True)


def user_errors(func: F) -> F:
    """Turn :class:`UserError` into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def progress(quiet: bool) -> Progress:
    """A rich progress bar on stderr, silent with --quiet."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=stderr, disable=quiet, transient=False)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed repeats a CPU run exactly.")]
Overwrite = Annotated[bool, typer.Option(help="Replace existing outputs instead of stopping.")]
OptionalPath = Annotated[Path | None, typer.Option()]
