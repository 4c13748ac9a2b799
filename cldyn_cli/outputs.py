"""All-or-nothing output folders: results are staged and only moved into place when every one succeeded."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cldyn_cli.errors import UserError


def check_output_dir(out: Path, names: list[str], suffix: str, overwrite: bool) -> None:
    """Refuse up front an output path that is a file, or existing outputs without --overwrite."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; give a folder")
    if overwrite:
        return
    existing = [n + suffix for n in names if (out / (n + suffix)).exists()]
    if existing:
        shown = ", ".join(existing[:3]) + (f" (+{len(existing) - 3} more)" if len(existing) > 3 else "")
        raise UserError(f"{len(existing)} output(s) already exist in {out}: {shown}; pass --overwrite or "
                        "choose another folder")


@contextmanager
def all_or_nothing(out: Path) -> Iterator[Path]:
    """A hidden folder inside ``out`` to write into; its files move into ``out`` on success only.

    On failure nothing reaches ``out``, and ``out`` itself is removed again when this call created it.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".cldyn-partial-", dir=out))
    try:
        yield stage
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def current_umask() -> int:
    """The process umask (temporary files are created 0600; finished files get the usual mode)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds.

    Readers never see a half-written file, and a failure leaves no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_new_files(paths: list[Path], overwrite: bool) -> None:
    """Refuse up front to replace existing files unless --overwrite was given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                        "another --output")
