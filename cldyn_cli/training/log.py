"""The CSV loss log of a training run: one row per step (and task), written in step with the state.

Rows are kept in memory and the whole log is replaced atomically at each checkpoint, just before
the training state is saved, so the log on disk is never behind the state a resumed run starts
from. A run refused before training writes no log, and a resumed run killed before its first
checkpoint leaves the earlier log as it was. A resumed run keeps the earlier rows up to the step it
restarts from, so the log reads as if the run had never stopped.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cldyn_cli.errors import UserError
from cldyn_cli.outputs import atomic_path


def default_log_path(output: Path) -> Path:
    """Where a run writing ``output`` logs by default: beside it, ``NAME.log.csv``."""
    return output.with_name(output.stem + ".log.csv")


def _kept_rows(log: Path, keep_until: int) -> list[dict[str, Any]]:
    """Rows of an earlier log up to the step a resumed run restarts from."""
    if not log.exists():
        return []
    try:
        with log.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "step" not in (reader.fieldnames or []):
                raise ValueError("no step column")
            return [row for row in reader if int(row["step"]) <= keep_until]
    except (OSError, csv.Error, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise UserError(f"--log {log} is not a loss log written by cldyn; move it away or give another "
                        "--log") from None


class StepLog:
    """The rows of a run's CSV log at ``path`` (column ``step`` first), held until :meth:`write`.

    ``resumed_at`` None starts a new log; a step number keeps the earlier log's rows up to it.
    """

    def __init__(self, path: Path, fields: list[str], resumed_at: int | None) -> None:
        self.path, self.fields = path, fields
        self.rows = _kept_rows(path, resumed_at) if resumed_at is not None else []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def write(self) -> None:
        """Replace the file on disk by every row so far, atomically (call it at each checkpoint)."""
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(self.rows)
