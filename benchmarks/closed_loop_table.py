"""Markdown tables from the JSON files of benchmarks/closed_loop.py, for docs/results.md.

Usage: python benchmarks/closed_loop_table.py r.json                 # one run: per seed, cross, fusion
       python benchmarks/closed_loop_table.py --ablation a.json b.json  # one row per variant
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def run_table(doc: dict) -> str:
    """Base vs compensated per metric: mean ± std, per-seed values, the seeds where compensated wins."""
    lines = ["| scored by | metric | base | compensated | per seed (base → compensated) |", "|---|---|---|---|---|"]
    rows = [("conditioning network", doc["base"], doc["compensated"])]
    rows += [(f"cross: {label}", t["base"], t["compensated"]) for label, t in doc["cross"].items()]
    rows += [("fusion metrics", doc["fusion"]["base"], doc["fusion"]["compensated"])]
    for label, base, comp in rows:
        for metric in base:
            seeds = ", ".join(f"{b:.4f} → {c:.4f}" for b, c in zip(base[metric], comp[metric]))
            lines.append(f"| {label} | {metric} | {mean_std(base[metric])} | {mean_std(comp[metric])} | {seeds} |")
    return "\n".join(lines)


def largest_fusion_change(doc: dict) -> str:
    """The fusion metric whose mean moved most from base, relative to base (they must stay near it)."""
    base, comp = doc["fusion"]["base"], doc["fusion"]["compensated"]
    means = {m: (statistics.fmean(base[m]), statistics.fmean(comp[m])) for m in base}
    change = {m: c / b - 1 for m, (b, c) in means.items() if b}
    metric = max(change, key=lambda m: abs(change[m]))
    return f"{metric} {100 * change[metric]:+.1f}%"


def ablation_table(docs: list[tuple[str, dict]]) -> str:
    """One row per variant: its settings, the primary metric's change over base per seed, and the
    largest change of a fusion metric."""
    lines = ["| variant | settings | steps x batch | metric | base | compensated | change per seed | wins "
             "| largest fusion change |", "|---|---|---|---|---|---|---|---|---|"]
    for name, doc in docs:
        metric = next(iter(doc["base"]))
        base, comp = doc["base"][metric], doc["compensated"][metric]
        change = ", ".join(f"{c - b:+.4f}" for b, c in zip(base, comp))
        settings = " ".join(doc["settings"]) or "defaults"
        steps = f"{doc['sizes']['steps']} x {doc['sizes']['batch']}"
        lines.append(f"| {name} | {settings} | {steps} | {metric} | {mean_std(base)} | {mean_std(comp)} | {change} | "
                     f"{doc['compensated_wins'][metric]}/{len(base)} | {largest_fusion_change(doc)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path)
    parser.add_argument("--ablation", action="store_true", help="one row per file (named by its stem)")
    args = parser.parse_args()
    docs = [(path.stem, json.loads(path.read_text())) for path in args.json]
    print(ablation_table(docs) if args.ablation else "\n\n".join(run_table(doc) for _, doc in docs))


if __name__ == "__main__":
    main()
