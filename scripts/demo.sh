#!/usr/bin/env bash
# Set up a virtual environment, make synthetic scenes, fuse them with the shipped base model,
# and write the fused images plus a metrics summary to demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e .
cldyn=.venv/bin/cldyn
$cldyn synth demo-out/scenes --n 6 --size 640x480 --seed 2026 --layout pairs --quiet
$cldyn fuse demo-out/scenes/ir demo-out/scenes/vis -o demo-out/fused --overwrite
$cldyn eval demo-out/scenes/ir demo-out/scenes/vis demo-out/fused --json demo-out/metrics.json
echo "fused images: demo-out/fused/   metrics: demo-out/metrics.json"
