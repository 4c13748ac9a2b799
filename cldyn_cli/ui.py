"""Shared pieces of every command, core or plugin: user-error handling, option types, progress, devices.

It lives outside `cldyn_cli.cli` so that plugin command modules can import it without building the app."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar, Union

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


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class PlainProgress:
    """Progress as plain lines on stderr, for output that is not a terminal (nohup, CI, cluster jobs).

    A task's first update prints a line, then at most one line every ``interval`` seconds, and its
    completion one more. It offers the part of rich's ``Progress`` that cldyn's commands use.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: Optional[float] = None, completed: float = 0,
                 status: str = "") -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = {"description": description, "total": total, "completed": completed,
                                "start_completed": completed, "status": status, "start": time.monotonic(),
                                "printed": None}
        return task_id

    def update(self, task_id: int, *, total: Optional[float] = None, completed: Optional[float] = None,
               advance: Optional[float] = None, status: Optional[str] = None) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if status is not None:
            task["status"] = status
        now = time.monotonic()
        done = task["total"] is not None and task["completed"] >= task["total"]
        if task["printed"] is None or done or now - task["printed"] >= self.interval:
            task["printed"] = now
            print(self.line(task, now), file=sys.stderr, flush=True)

    @staticmethod
    def line(task: dict[str, Any], now: float) -> str:
        """E.g. ``training: 120/2000 (6%), 0:01:02 elapsed, about 0:15:40 left, loss 0.1234``."""
        elapsed = now - task["start"]
        completed, total = task["completed"], task["total"]
        parts = [f"{task['description']}: {completed:g}" + (f"/{total:g} ({100 * completed / total:.0f}%)"
                                                             if total else ""),
                 f"{_clock(elapsed)} elapsed"]
        done_here = completed - task["start_completed"]
        if total and 0 < done_here and completed < total:
            parts.append(f"about {_clock(elapsed / done_here * (total - completed))} left")
        if task["status"]:
            parts.append(task["status"])
        return ", ".join(parts)


def progress_interval() -> float:
    """Seconds between plain progress lines (``CLDYN_PROGRESS_SECONDS``, default 30)."""
    value = os.environ.get("CLDYN_PROGRESS_SECONDS", "30")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise UserError(f"CLDYN_PROGRESS_SECONDS={value!r} is not a number of seconds") from None


def progress(quiet: bool) -> Union[Progress, PlainProgress]:
    """Progress on stderr: a rich bar on a terminal, plain lines every few seconds otherwise;
    silent with --quiet."""
    if not quiet and not stderr.is_terminal:
        return PlainProgress(progress_interval())
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
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs instead of stopping.")]
MaxPixels = Annotated[int, typer.Option(min=1, help="Largest image (width x height) read or written; larger "
                                        "ones are refused before decoding.")]
# The options that name a compensation and the task network it is conditioned on (fuse, export).
RSCFile = Annotated[Optional[Path], typer.Option("--rsc", help="Compensation from `cldyn compensate` (it carries "
                                                 "its base network).")]
TaskWeights = Annotated[Optional[Path], typer.Option("--task-weights", help="The task network's weights.")]
TaskConfig = Annotated[Optional[Path], typer.Option("--task-config", help="The task network's config file.")]
FeatureLayer = Annotated[Optional[str], typer.Option("--feature-layer", help="Task-network layer to tap (default: "
                                                     "the one the compensation was trained with).")]


def check_compensation_args(task: Optional[str], rsc: Optional[Path], base: Optional[Path]) -> None:
    """--task and --rsc come as a pair, and a compensation brings its own base network."""
    if (task is None) != (rsc is None):
        raise UserError("--task and --rsc go together: the compensation (--rsc) is conditioned on the task network")
    if task is not None and base is not None:
        raise UserError("--base cannot be combined with --rsc: the compensation file carries the base it was "
                        "trained with")


TrustCheckpoint = Annotated[bool, typer.Option("--trust-checkpoint", help="Unpickle task checkpoints in full "
                                               "(runs code stored in them). Only for files you trust; safe "
                                               "loading is the default.")]


def default_of(config: type, name: str) -> str:
    """The default of field ``name`` of a config dataclass, as --help shows it.

    Options that a YAML config may also set default to None (so that only flags the user gave
    override the file); their help shows the config's default instead.
    """
    return str(next(f.default for f in dataclasses.fields(config) if f.name == name))
