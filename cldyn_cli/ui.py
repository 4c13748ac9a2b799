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
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click; pinned
from typer.core import TyperGroup
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


class OneLineErrors(TyperGroup):
    """The app's command group: a bad flag (unknown, missing, out of range) is one line, exit 2.

    Typer's default draws a multi-line box with the usage; a user error here reads like every
    other: ``error: Invalid value for '--tile': 10 is not in the range x>=64 (see 'cldyn fuse --help')``.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # the help has been printed already
            sys.exit(exc.exit_code)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            print(f"error: {message.rstrip('.')}{hint}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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
MaxPixels = Annotated[int, typer.Option(min=1, help="Largest image (width x height) read or written; larger "
                                        "ones are refused before decoding.")]
TrustCheckpoint = Annotated[bool, typer.Option(help="Unpickle task checkpoints in full (runs code stored in "
                                               "them). Only for files you trust; safe loading is the default.")]
OptionalPath = Annotated[Path | None, typer.Option()]
