"""`cldyn eval`: fusion-quality metrics of fused images against their infrared and visible sources."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cldyn_cli.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from cldyn_cli.ui import MaxPixels, Quiet, progress, user_errors
from cldyn_cli.errors import UserError
from cldyn_cli.outputs import atomic_path, check_writable
from cldyn_cli.metrics import CONVENTIONS, DEFAULT_CONVENTION, HIGHER_IS_BETTER, parse_metric_names
from cldyn_cli.metrics.conventions import get_convention, metric_notes
from cldyn_cli.metrics.evaluate import (GRAYSCALE_NOTE, Job, Summary, best_methods, build_jobs, evaluate_job,
                                        json_number, method_names, summarise)
from cldyn_cli.metrics.report import render_report

THUMB_SIZE = 200


def _check_output_file(path: Path | None, what: str) -> None:
    if path is not None:
        check_writable(path, what)


def _check_report_dir(path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise UserError(f"--report {path} is a file; give a folder (index.html is written into it)")
    if path is not None:
        check_writable(path, "--report", is_folder=True)


def _write_all(outputs: dict[Path, str]) -> None:
    """Write every output to a temporary file beside it; they all move into place only if all succeed."""
    try:
        with contextlib.ExitStack() as stack:
            for path, text in outputs.items():
                stack.enter_context(atomic_path(path)).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"cannot write outputs: {exc.strerror or exc}: {exc.filename or ''}") from None


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where available: workers start at once and only run numpy/scipy (no torch, no OpenMP).

    forkserver and spawn re-import the main module in every worker, which for the `cldyn` script
    means importing torch: seconds per worker. Elsewhere (macOS, Windows) spawn it is.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _run_jobs(jobs: list[Job], convention: str, metrics: list[str], thumbs: bool, workers: int,
              quiet: bool) -> list[dict]:
    """Evaluate every job, in worker processes when workers > 1; any failure stops the run."""
    size = THUMB_SIZE if thumbs else None
    results: list[dict | None] = [None] * len(jobs)
    with progress(quiet) as bar:
        task = bar.add_task("evaluating", total=len(jobs), status="")
        workers = min(workers, len(jobs))
        if workers <= 1:
            for i, job in enumerate(jobs):
                results[i] = evaluate_job(job, convention, metrics, size)
                bar.update(task, advance=1, status=job.name)
            return results  # type: ignore[return-value]
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
            futures = {pool.submit(evaluate_job, job, convention, metrics, size): i for i, job in enumerate(jobs)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise fut.exception()  # type: ignore[misc]
                    results[futures[fut]] = fut.result()
                    bar.update(task, advance=1, status=jobs[futures[fut]].name)
    return results  # type: ignore[return-value]


def _table(methods: list[str], metrics: list[str], summaries: list[dict[str, Summary]], n: int,
           convention: str) -> Table:
    table = Table(title=f"Fusion quality over {n} image(s), convention {convention}")
    table.add_column("metric")
    table.add_column("better", justify="center")
    for name in methods:
        table.add_column(f"{name}\nmean ± std" if len(methods) > 1 else "mean", justify="right")
        if len(methods) == 1:
            table.add_column("std", justify="right")
    for metric in metrics:
        best = best_methods(summaries, metric) if len(methods) > 1 else set()
        cells = []
        for i, s in enumerate(summaries):
            mean, std = _fmt(s[metric].mean), _fmt(s[metric].std)
            if len(methods) == 1:
                cells += [mean, std]
            else:
                text = f"{mean} ± {std}"
                cells.append(f"[bold green]{text}[/]" if i in best else text)
        table.add_row(metric, "↑" if HIGHER_IS_BETTER[metric] else "↓", *cells)
    return table


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}"


def _json_text(methods: list[str], images: list[str], values: list[dict[str, dict[str, float]]],
               summaries: list[dict[str, Summary]], metrics: list[str], convention: str) -> str:
    conv = get_convention(convention)
    notes = metric_notes(conv)
    conventions = {
        "convention": conv.name,
        "reference": conv.reference,
        "grayscale": GRAYSCALE_NOTE,
        "mean": "mean over images, skipping undefined (null) values",
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in metrics},
        "metrics": {m: notes[m] for m in metrics},
    }

    def block(i: int) -> dict:
        return {"images": {name: {m: json_number(values[i][name][m]) for m in metrics} for name in images},
                "mean": {m: json_number(summaries[i][m].mean) for m in metrics}}

    if len(methods) == 1:
        doc = {**block(0), "conventions": conventions}
    else:
        doc = {"methods": {name: block(i) for i, name in enumerate(methods)}, "conventions": conventions}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _csv_text(methods: list[str], images: list[str], values: list[dict[str, dict[str, float]]],
              metrics: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "image", *metrics])
    for i, method in enumerate(methods):
        for name in images:
            writer.writerow([method, name, *(repr(values[i][name][m]) for m in metrics)])
    return buf.getvalue()


@user_errors
def evaluate(
    ir: Annotated[Path, typer.Argument(metavar="IR", help="Infrared image, or a folder of them (sub-folders "
                                       "included).")],
    vis: Annotated[Path, typer.Argument(metavar="VIS", help="Visible image, or a folder whose files match IR's "
                                        "by name.")],
    fused_args: Annotated[Optional[list[Path]], typer.Argument(
        metavar="FUSED...", help="Fused image or folder, one per method to compare (files matched by name).",
        show_default=False)] = None,
    fused_opts: Annotated[Optional[list[Path]], typer.Option(
        "--fused", help="Another fused folder (or file) to compare; repeatable.", show_default=False)] = None,
    convention: Annotated[str, typer.Option(
        metavar="vifb|cddfuse",
        help="Metric convention: vifb (VIFB's MATLAB code) or cddfuse (CDDFuse's Evaluator.py); "
             "see docs/metrics.md.")] = DEFAULT_CONVENTION,
    metrics: Annotated[Optional[str], typer.Option(
        help="Comma-separated metrics to compute, e.g. EN,MI,Qabf (default: all of EN,SD,SF,AG,MI,SCD,VIF,"
             "Qabf,SSIM,Qcb,Qcv,Qcc,CC,PSNR).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Write per-image values and means as JSON.", show_default=False)] = None,
    csv_out: Annotated[Optional[Path], typer.Option(
        "--csv", help="Write per-image values as CSV (one row per method and image).", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Folder to write a self-contained HTML report into (index.html).", show_default=False)] = None,
    workers: Annotated[int, typer.Option(
        min=0, help="Processes computing metrics in parallel (0: one per CPU core, at most 8).")] = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Score fused images with fusion-quality metrics (8-bit grey, visible as luminance).

    Pairs IR, VIS and fused files by name; several fused folders compare methods side by side.

    Prints mean and std over images per metric; --json, --csv and --report appear only when every image succeeded.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"unknown --convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    try:
        chosen = parse_metric_names(metrics)
    except ValueError as exc:
        raise UserError(f"--metrics: {exc}") from None
    set_max_pixels(max_pixels)
    fused = list(fused_args or []) + list(fused_opts or [])
    _check_output_file(json_out, "--json")
    _check_output_file(csv_out, "--csv")
    _check_report_dir(report)
    jobs = build_jobs(ir, vis, fused)
    methods = method_names(fused)
    if workers == 0:
        workers = min(8, os.cpu_count() or 1)
    results = _run_jobs(jobs, convention, chosen, report is not None, workers, quiet)

    images = [job.name for job in jobs]
    values = [{job.name: res["metrics"][i] for job, res in zip(jobs, results)} for i in range(len(methods))]
    summaries = [summarise(v, chosen) for v in values]

    outputs: dict[Path, str] = {}
    if json_out is not None:
        outputs[json_out] = _json_text(methods, images, values, summaries, chosen, convention)
    if csv_out is not None:
        outputs[csv_out] = _csv_text(methods, images, values, chosen)
    if report is not None:
        outputs[report / "index.html"] = render_report(
            methods=methods, metrics=chosen, convention=convention, summaries=summaries, images=images,
            values={job.name: res["metrics"] for job, res in zip(jobs, results)},
            thumbs={job.name: res["thumbs"] for job, res in zip(jobs, results)})
    _write_all(outputs)

    Console().print(_table(methods, chosen, summaries, len(images), convention))
    undefined = [f"{m} ({s[m].undefined})" + (f" for {name}" if len(methods) > 1 else "")
                 for name, s in zip(methods, summaries) for m in chosen if s[m].undefined]
    if undefined and not quiet:
        typer.echo("n/a: undefined for some images and left out of the mean: " + ", ".join(undefined), err=True)
    if outputs and not quiet:
        typer.echo("wrote " + ", ".join(str(p) for p in outputs), err=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
