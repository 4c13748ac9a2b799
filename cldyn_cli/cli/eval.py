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
from cldyn_cli.metrics import task as task_metrics
from cldyn_cli.tasks import TaskOptions
from cldyn_cli.ui import Device, MaxPixels, Quiet, TrustCheckpoint, progress, resolve_device, user_errors
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
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATHS",
        help="IR VIS [FUSED]...: the infrared and visible images (or folders, sub-folders included), then one "
             "fused image or folder per method to compare, matched by name. With --task: FUSED... folders only.",
        show_default=False)],
    fused_opts: Annotated[Optional[list[Path]], typer.Option(
        "--fused", metavar="PATH", help="Another fused folder (or file) to compare; repeatable.",
        show_default=False)] = None,
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
    task: Annotated[Optional[str], typer.Option(
        help="Score a downstream task instead (see `cldyn plugins`, e.g. det, seg, sod): its network runs on "
             "the fused images against the ground truth of --data.", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="With --task: the task's dataset folder (its layout), whose --split the fused folders hold.",
        show_default=False)] = None,
    split: Annotated[str, typer.Option(help="With --task: the split of --data that was fused.")] = "test",
    task_weights: Annotated[Optional[Path], typer.Option(
        help="With --task: the task network's weights.", show_default=False)] = None,
    task_config: Annotated[Optional[Path], typer.Option(
        help="With --task: the task network's config file.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="With --task: images per forward pass.")] = 1,
    device: Device = "auto",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    trust_checkpoint: TrustCheckpoint = False,
    quiet: Quiet = False,
) -> None:
    """Score fused images with fusion-quality metrics (8-bit grey, visible as luminance), or with
    a downstream task's metrics (--task).

    Pairs IR, VIS and fused files by name; several fused folders compare methods side by side.
    Prints mean and std over images per metric.

    With --task NAME --data DIR, the frozen task network scores each fused folder against the
    ground truth of DIR's --split (e.g. mAP for det, mIoU for seg, F-measure and MAE for sod).

    --json, --csv and --report appear only when every image succeeded.
    """
    _check_output_file(json_out, "--json")
    _check_output_file(csv_out, "--csv")
    _check_report_dir(report)
    set_max_pixels(max_pixels)
    if task is not None:
        fused = list(paths) + list(fused_opts or [])
        options = TaskOptions(task_weights, task_config, resolve_device(device), trust=trust_checkpoint)
        _task_metrics(task, fused, data, split, options, batch_size, json_out, csv_out, report, quiet)
        return
    if data is not None or task_weights is not None or task_config is not None:
        raise UserError("--data, --task-weights and --task-config are for --task; add --task NAME")
    if len(paths) < 2:
        raise UserError("give IR and VIS (then the fused images), or --task NAME --data DIR with fused folders")
    _fusion_metrics(paths[0], paths[1], list(paths[2:]) + list(fused_opts or []), convention, metrics, json_out,
                    csv_out, report, workers, quiet)


def _fusion_metrics(ir: Path, vis: Path, fused: list[Path], convention: str, metrics: Optional[str],
                    json_out: Optional[Path], csv_out: Optional[Path], report: Optional[Path], workers: int,
                    quiet: bool) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"unknown --convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    try:
        chosen = parse_metric_names(metrics)
    except ValueError as exc:
        raise UserError(f"--metrics: {exc}") from None
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


def _task_metrics(task: str, fused: list[Path], data: Optional[Path], split: str, options: TaskOptions,
                  batch_size: int, json_out: Optional[Path], csv_out: Optional[Path], report: Optional[Path],
                  quiet: bool) -> None:
    from cldyn_cli.api import require_weights
    from cldyn_cli.plugins import get_task

    if data is None:
        raise UserError("--task needs --data: the dataset folder holding the ground truth of the fused images")
    if not fused:
        raise UserError("give one or more fused folders to score with --task")
    if len(set(fused)) != len(fused):
        raise UserError("the same fused folder is given twice")
    spec = get_task(task)
    require_weights(options, spec.name)
    backend = spec.load(options)
    with progress(quiet) as bar:
        def on_start(label: str, n: int):
            job = bar.add_task(f"{spec.name} on {label}", total=n, status="")
            return lambda done, name: bar.update(job, advance=done, status=name)

        results = task_metrics.score_folders(backend, fused, data, split, batch_size, options.device, on_start)
    about = {"data": str(data), "split": split, "weights": str(options.weights),
             "config": str(options.config) if options.config else None}
    outputs: dict[Path, str] = {}
    if json_out is not None:
        outputs[json_out] = task_metrics.json_text(spec.name, about, results)
    if csv_out is not None:
        outputs[csv_out] = task_metrics.csv_text(results)
    if report is not None:
        outputs[report / "index.html"] = task_metrics.html_text(spec.name, about, results)
    _write_all(outputs)
    table = Table(title=f"{spec.name} on fused images ({data}, {split})")
    table.add_column("metric")
    for label, r in results.items():
        table.add_column(f"{label}\n({r['images']} images)", justify="right")
    for name in task_metrics.metric_names(results):
        table.add_row(name, *(_fmt(r["metrics"].get(name, math.nan)) for r in results.values()))
    Console().print(table)
    if outputs and not quiet:
        typer.echo("wrote " + ", ".join(str(p) for p in outputs), err=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
