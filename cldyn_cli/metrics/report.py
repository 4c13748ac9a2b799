"""Self-contained HTML report of a `cldyn eval` run (thumbnails inlined as data URIs, no scripts)."""

from __future__ import annotations

import base64
import html
import math

from cldyn_cli.metrics import HIGHER_IS_BETTER
from cldyn_cli.metrics.conventions import get_convention, metric_notes
from cldyn_cli.metrics.evaluate import GRAYSCALE_NOTE, Summary, best_methods

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; white-space: nowrap; }
td.best { background: #d9f2d9; font-weight: bold; }
img { display: block; max-width: 200px; }
.strip td { vertical-align: top; text-align: center; }
.note { color: #666; font-size: 0.9em; }
"""


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def _arrow(metric: str) -> str:
    return "&uarr;" if HIGHER_IS_BETTER[metric] else "&darr;"


def _img(data: bytes, alt: str) -> str:
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _summary_table(methods: list[str], metrics: list[str], summaries: list[dict[str, Summary]]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = []
    for metric in metrics:
        best = best_methods(summaries, metric) if len(methods) > 1 else set()
        cells = []
        for i, s in enumerate(summaries):
            cls = ' class="best"' if i in best else ""
            cells.append(f"<td{cls}>{_fmt(s[metric].mean)} &plusmn; {_fmt(s[metric].std)}</td>")
        rows.append(f'<tr><td class="name">{metric} {_arrow(metric)}</td>{"".join(cells)}</tr>')
    return (f'<table><tr><th class="name">metric</th>{head}</tr>{"".join(rows)}</table>')


def _image_section(name: str, methods: list[str], metrics: list[str], values: list[dict[str, float]],
                   thumbs: list[bytes]) -> str:
    labels = ["infrared", "visible", *methods]
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    pics = "".join(f"<td>{_img(t, f'{name} {label}')}</td>" for t, label in zip(thumbs, labels))
    rows = []
    for metric in metrics:
        vals = [v[metric] for v in values]
        finite = [v for v in vals if not math.isnan(v)]
        best = set()
        if len(methods) > 1 and finite:
            target = max(finite) if HIGHER_IS_BETTER[metric] else min(finite)
            best = {i for i, v in enumerate(vals) if v == target}
        cells = "".join(f'<td{" class=best" if i in best else ""}>{_fmt(v)}</td>' for i, v in enumerate(vals))
        rows.append(f'<tr><td class="name" colspan="2">{metric} {_arrow(metric)}</td>{cells}</tr>')
    return (f"<h2>{html.escape(name)}</h2><table class=\"strip\"><tr>{head}</tr><tr>{pics}</tr>"
            f"{''.join(rows)}</table>")


def render_report(*, methods: list[str], metrics: list[str], convention: str,
                  summaries: list[dict[str, Summary]], images: list[str],
                  values: dict[str, list[dict[str, float]]], thumbs: dict[str, list[bytes]]) -> str:
    """The whole HTML page.

    ``values[image]`` and ``thumbs[image]`` are per method (thumbs: IR, VIS, then one per method).
    """
    conv = get_convention(convention)
    notes = metric_notes(conv)
    note_rows = "".join(f'<tr><td class="name">{m} {_arrow(m)}</td><td class="name">{html.escape(notes[m])}</td></tr>'
                        for m in metrics)
    sections = "".join(_image_section(name, methods, metrics, values[name], thumbs[name]) for name in images)
    best_note = " Best mean per metric highlighted." if len(methods) > 1 else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cldyn eval: fusion metrics</title>
<style>{_CSS}</style></head><body>
<h1>Fusion quality ({len(images)} image(s), convention {html.escape(conv.name)})</h1>
<p class="note">Mean &plusmn; standard deviation over images; &uarr; higher is better, &darr; lower is better;
n/a values (undefined) are left out of the means.{best_note}</p>
{_summary_table(methods, metrics, summaries)}
<h2>Conventions</h2>
<p class="note">{html.escape(conv.reference)}. Grey levels: {html.escape(GRAYSCALE_NOTE)}.</p>
<table>{note_rows}</table>
{sections}
</body></html>
"""
