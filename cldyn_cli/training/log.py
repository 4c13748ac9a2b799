"""The CSV loss log of a training run: one row per step (and task), flushed as it goes.

A resumed run keeps the earlier rows up to the step it restarts from, so the log reads as if the
run had never stopped.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

RowWriter = Callable[[list[dict[str, Any]]], None]


def default_log_path(output: Path) -> Path:
    """Where a run writing ``output`` logs by default: beside it, ``NAME.log.csv``."""
    return output.with_name(output.stem + ".log.csv")


def _kept_rows(log: Path, keep_until: int) -> list[dict[str, str]]:
    """Rows of an earlier log up to the step a resumed run restarts from."""
    if not log.exists():
        return []
    with log.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["step"]) <= keep_until]


@contextmanager
def step_log(path: Path, fields: list[str], resumed_at: int | None) -> Iterator[RowWriter]:
    """A function that appends rows to the CSV at ``path`` (column ``step`` first).

    ``resumed_at`` None starts a new log; a step number keeps the earlier log's rows up to it.
    """
    kept = _kept_rows(path, resumed_at) if resumed_at is not None else []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)

        def write(rows: list[dict[str, Any]]) -> None:
            writer.writerows(rows)
            handle.flush()

        yield write
