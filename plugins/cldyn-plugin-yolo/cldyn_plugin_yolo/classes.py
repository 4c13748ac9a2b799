"""Data classes to detector classes, by name: a COCO detector can judge M3FD-labelled scenes.

The labels' class numbers index the data's class names (``--task-config`` ``names:``); the detector
has its own. Each data class goes to the detector class that ``class_map:`` names for it, else to
the detector class of the same name (exactly, else compared case-insensitively: ``Car`` -> ``car``),
else it is dropped: its boxes leave the loss targets and the ground truth of the metrics, and one
warning line names every dropped class. Nothing matching at all is an error."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from cldyn_cli.plugin_api import UserError


@dataclass(frozen=True)
class ClassMapping:
    """``ids[k]``: the detector class of data class ``k``, or None when that class is dropped."""

    data_names: tuple[str, ...]
    ids: tuple[int | None, ...]

    @property
    def identity(self) -> bool:
        return self.ids == tuple(range(len(self.ids)))

    @property
    def detector_classes(self) -> list[int]:
        """The detector classes the data's labels map to (sorted, without repeats): what is evaluated."""
        return sorted({i for i in self.ids if i is not None})

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """(N, 5) ``class cx cy w h`` rows with data class numbers -> detector class numbers, rows of
        dropped classes removed."""
        if self.identity or not len(labels):
            return labels
        table = np.array([-1 if i is None else i for i in self.ids], dtype=np.float32)
        out = labels.copy()
        out[:, 0] = table[labels[:, 0].astype(np.int64)]
        return out[out[:, 0] >= 0]


def identity(names: list[str]) -> ClassMapping:
    """The data's classes are the detector's, number for number."""
    return ClassMapping(tuple(names), tuple(range(len(names))))


def read_class_map(raw: Any, source: str) -> dict[str, str]:
    """``class_map:`` of a task config: a mapping of data class names to detector class names."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UserError(f"class_map in {source} must map data class names to detector class names, "
                        "e.g. class_map: {People: person}")
    return dict(raw)


def _shown(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def match_classes(data_names: list[str], detector_names: list[str], class_map: dict[str, str],
                  detector: str) -> ClassMapping:
    """Map each data class to a detector class by ``class_map`` or by case-insensitive name.

    ``detector`` names the detector in messages. Unknown names in ``class_map`` and a mapping that
    keeps no class are errors; dropped classes are one warning line on stderr.
    """
    unknown = [name for name in class_map if name not in data_names]
    if unknown:
        raise UserError(f"class_map names data class {unknown[0]!r}, which is not one of the data's classes "
                        f"({_shown(data_names)})")
    by_name = {name: i for i, name in reversed(list(enumerate(detector_names)))}  # the first of equal names
    by_folded = {name.casefold(): i for i, name in reversed(list(enumerate(detector_names)))}
    missing = [target for target in class_map.values() if target not in by_name]
    if missing:
        raise UserError(f"class_map maps to {missing[0]!r}, which {detector} does not detect "
                        f"(its classes: {_shown(detector_names)})")
    ids = tuple(by_name[class_map[name]] if name in class_map else by_name.get(name, by_folded.get(name.casefold()))
                for name in data_names)
    if all(i is None for i in ids):
        raise UserError(f"none of the data's classes ({_shown(data_names)}) is a class of {detector} "
                        f"({_shown(detector_names)}); map them by name with class_map: in --task-config")
    dropped = [name for name, i in zip(data_names, ids) if i is None]
    if dropped:
        print(f"warning: {detector} has no class {', '.join(dropped)}: "
              f"{'its' if len(dropped) == 1 else 'their'} boxes are ignored (map names with class_map: "
              "in --task-config)", file=sys.stderr)
    return ClassMapping(tuple(data_names), ids)
