"""Outputs that appear whole or not at all, one writer at a time, with no leftovers from killed runs.

- :func:`atomic_path` writes one file through a temporary beside it (fsynced, then renamed).
- :func:`all_or_nothing` writes a folder of results: a new folder is staged beside it and renamed
  into place in one step; an existing folder is locked against a second writer, and its staged
  files are moved in after the stage has been renamed to a ``committing`` journal, so that a run
  killed half-way through the moves is completed by the next run instead of leaving a mix.
- Temporaries carry the writer's process id; those of dead processes are removed on the next run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cldyn_cli.errors import UserError

PARTIAL = ".cldyn-partial-"  # a stage being written: removed when its writer is dead
COMMITTING = ".cldyn-committing-"  # a finished stage being moved in: completed when its writer is dead


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


def check_writable(path: Path, what: str, is_folder: bool = False) -> None:
    """Refuse before any work a file (or, ``is_folder``, folder) ``path`` that could not be written.

    ``what`` names it in the error (e.g. "--log"). The nearest existing folder at or above it must
    be a folder in which a file can be created; the probe file is removed again, nothing is created.
    """
    if path.is_dir() and not is_folder:
        raise UserError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not path.is_dir() and is_folder:
        raise UserError(f"{what} {path} is a file; give a folder")
    folder = path if is_folder else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {what} {path}: {folder} is a file, not a folder; choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".cldyn-probe-{os.getpid()}-", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {what} {path}: {folder} is not writable ({exc.strerror}); "
                        "choose another location") from None
    os.close(fd)
    os.unlink(probe)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def _owner(name: str, prefix: str) -> int | None:
    """The process id written after ``prefix`` in a temporary's name (None when there is none)."""
    head = name[len(prefix):].split("-", 1)[0].split(".", 1)[0]
    return int(head) if name.startswith(prefix) and head.isdigit() else None


def _stale(folder: Path, prefix: str) -> list[Path]:
    """Entries of ``folder`` named ``prefix<pid>...`` whose writing process has died."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        pid = _owner(entry.name, prefix)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            found.append(entry)
    return found


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` (see :func:`atomic_path`) left by killed processes."""
    for tmp in _stale(path.parent, f".{path.name}."):
        if tmp.name.endswith(".tmp"):
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (a rename is durable only after its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (temporary files are created 0600; finished files get the usual mode)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds.

    Readers never see a half-written file, a failure leaves no temporary file behind, and one
    left by a killed process is removed by the next write of the same file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        _fsync(Path(tmp))
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_new_files(paths: list[Path], overwrite: bool) -> None:
    """Refuse up front to replace existing files unless --overwrite was given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                        "another --output")


def _move_in(stage: Path, out: Path) -> None:
    """Move every file of ``stage`` to the same place under ``out``, then sync and remove ``stage``."""
    folders = {out}
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        target = out / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        folders.add(target.parent)
    for folder in folders:
        _fsync(folder)
    shutil.rmtree(stage, ignore_errors=True)


def _recover(out: Path) -> None:
    """Finish the commits and remove the stages that killed runs left in ``out``."""
    for journal in _stale(out, COMMITTING):
        _move_in(journal, out)
        print(f"note: completed an interrupted write into {out}", file=sys.stderr)
    for stage in _stale(out, PARTIAL):
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder ``out``; a second writer gets a one-line error."""
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            writers = sorted({_owner(p.name, PARTIAL) or _owner(p.name, COMMITTING) for p in out.iterdir()} - {None})
            who = f" (pid {', '.join(map(str, writers))})" if writers else ""
            raise UserError(f"output {out} is being written by another cldyn process{who}; wait for it to "
                            "finish or choose another folder") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def all_or_nothing(out: Path) -> Iterator[Path]:
    """A stage folder to write results into; they appear in ``out`` only when the block succeeds.

    A new ``out`` is staged beside it and renamed into place (one step for a reader); an existing
    one is locked, and its staged files are moved in under a journal (see the module docstring).
    On failure nothing reaches ``out``; the block may raise UserError before any work for an
    unwritable location or a concurrent writer.
    """
    check_writable(out, "output", is_folder=True)
    if out.is_dir():
        with _locked(out):
            _recover(out)
            stage = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{os.getpid()}-", dir=out))
            try:
                yield stage
                journal = stage.with_name(COMMITTING + stage.name[len(PARTIAL):])
                os.rename(stage, journal)  # from here on, a killed run is completed by the next one
                _fsync(out)
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            _move_in(journal, out)
        return
    created = [p for p in reversed(out.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    for stage in _stale(out.parent, f".{out.name}{PARTIAL}"):
        shutil.rmtree(stage, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL}{os.getpid()}-", dir=out.parent))
    try:
        yield stage
        for folder in [p for p in stage.rglob("*") if p.is_dir()] + [stage]:
            _fsync(folder)
        try:
            os.rename(stage, out)
        except OSError:
            raise UserError(f"output {out} was created by another process while this run was writing; "
                            "run again with --overwrite or choose another folder") from None
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
