"""Importing the authors' A2SI from a folder with their released code, for comparisons."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def import_authors_a2si(folder: Path) -> type:
    """Their ``models.A2SI.A2SI`` class. ImportError (one line) if the folder or a package it needs is missing.

    Their ``utils/utils.py`` imports a module ``args`` that the release does not contain and that
    it never uses; an empty stand-in is registered when none exists.
    """
    if not (folder / "models" / "A2SI.py").is_file():
        raise ImportError(f"{folder} has no models/A2SI.py (give the folder of the authors' code)")
    sys.modules.setdefault("args", types.ModuleType("args"))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("models.A2SI").A2SI
    except ImportError as exc:
        raise ImportError(f"the authors' A2SI needs {exc.name or exc}, which is not installed") from None
    finally:
        sys.path.remove(str(folder))
