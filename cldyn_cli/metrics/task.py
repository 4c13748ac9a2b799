"""Task metrics of fused images: the frozen task network run on them against the dataset's ground truth.

The plugin decides how fused images and ground truth become batches (``TaskBackend.fused_dataset``,
collated by ``TaskBackend.collate``) and what it measures (``TaskBackend.evaluate``); this module
only runs it per fused folder and renders the results like the fusion metrics (JSON, CSV, HTML).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskBackend

Advance = Callable[[int, str], None]  # (images done in this batch, last name)


def _batches(backend: TaskBackend, dataset: Any, batch_size: int, device: torch.device,
             advance: Advance) -> Iterator[tuple[torch.Tensor, Any]]:
    for start in range(0, len(dataset), batch_size):
        batch = backend.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield batch.vis.to(device), batch.targets
        advance(len(batch.names), batch.names[-1])


def score_folders(backend: TaskBackend, folders: list[Path], data: Path, split: str, batch_size: int,
                  device: torch.device, on_start: Callable[[str, int], Advance]) -> dict[str, dict[str, Any]]:
    """``{label: {"images": n, "metrics": {...}}}`` per fused folder; every folder is checked before any runs."""
    datasets = [backend.fused_dataset(folder, data, split) for folder in folders]
    for folder, dataset in zip(folders, datasets):
        if len(dataset) == 0:
            raise UserError(f"no samples for {folder} in split {split!r} of {data}")
    results = {}
    for label, dataset in zip(method_labels(folders), datasets):
        metrics = backend.evaluate(_batches(backend, dataset, batch_size, device, on_start(label, len(dataset))))
        results[label] = {"images": len(dataset), "metrics": {k: float(v) for k, v in metrics.items()}}
    return results


def method_labels(folders: list[Path]) -> list[str]:
    """Folder names as column labels, or full paths where names repeat."""
    short = [folder.name or str(folder) for folder in folders]
    return short if len(set(short)) == len(short) else [str(folder) for folder in folders]


def _number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def metric_names(results: dict[str, dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in results.values() for k in r["metrics"]))


def json_text(task: str, about: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    doc = {"task": task, **about,
           "methods": {label: {"images": r["images"], "metrics": {k: _number(v) for k, v in r["metrics"].items()}}
                       for label, r in results.items()}}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def csv_text(results: dict[str, dict[str, Any]]) -> str:
    names = metric_names(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "images", *names])
    for label, r in results.items():
        writer.writerow([label, r["images"], *(repr(r["metrics"].get(n, math.nan)) for n in names)])
    return buf.getvalue()


def html_text(task: str, about: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    names = metric_names(results)
    head = "".join(f"<th>{html.escape(label)} ({r['images']})</th>" for label, r in results.items())
    rows = "".join(
        f'<tr><td class="name">{html.escape(n)}</td>'
        + "".join(f"<td>{_fmt(r['metrics'].get(n, math.nan))}</td>" for r in results.values()) + "</tr>"
        for n in names)
    facts = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in about.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cldyn eval --task {html.escape(task)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}td.name,th.name{text-align:left}"
            "</style></head><body>"
            f"<h1>Task {html.escape(task)}: metrics on fused images</h1><ul>{facts}</ul>"
            f'<table><tr><th class="name">metric</th>{head}</tr>{rows}</table></body></html>\n')


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
