"""Time per metric for one IR/visible/fused triple (default 640x480) on one CPU core.

Reports the best of several repeats (wall clock and process CPU time) per metric and for all
metrics together, for each convention. Single-threaded: thread pools are capped before numpy loads.
Usage: python benchmarks/bench_metrics.py [--size 640x480] [--repeats 7] [--json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) over ``repeats`` calls after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from cldyn_cli.metrics import CONVENTIONS, METRICS, compute_all
    from cldyn_cli.metrics.testcard import make_triple

    a, b, f = make_triple(height, width, 0)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for conv in CONVENTIONS:
        rows = {}
        for name, fn in METRICS.items():
            wall, cpu = best_time(lambda: fn(a, b, f, conv), args.repeats)  # noqa: B023
            rows[name] = {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3}
        wall, cpu = best_time(lambda: compute_all(a, b, f, conv), args.repeats)  # noqa: B023
        rows["all"] = {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3}
        results[conv] = rows
    if args.json:
        print(json.dumps({"size": f"{width}x{height}", "results": results}, indent=2))
        return
    convs = list(results)
    print(f"metric times for one {width}x{height} triple, best of {args.repeats} (ms, wall / cpu)")
    print(f"{'metric':8s}" + "".join(f"{c:>22s}" for c in convs))
    for name in [*METRICS, "all"]:
        cells = "".join(f"{results[c][name]['wall_ms']:>12.1f} /{results[c][name]['cpu_ms']:>8.1f}" for c in convs)
        print(f"{name:8s}{cells}")


if __name__ == "__main__":
    main()
