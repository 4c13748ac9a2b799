#!/usr/bin/env bash
# Reproduce the base model shipped in cldyn_cli/weights/base_vfn.safetensors:
# synthetic scenes (seed 7), then `cldyn train-base` with a CPU-sized budget (about 15 minutes
# on one free CPU core; one thread also makes the run repeat bit for bit). The paper's reference schedule (256 crops, batch 16, 100 epochs) is the default
# of `cldyn train-base`; this script only shortens it.
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."
cldyn=${CLDYN:-.venv/bin/cldyn}
work=build/default-model
$cldyn synth "$work/scenes" --n 96 --size 320x256 --seed 7 --layout pairs --quiet
$cldyn train-base "$work/scenes" -o "$work/base_vfn.safetensors" \
    --steps 500 --crop 96 --batch-size 8 --checkpoint-every 50 --lr 1e-3 --blocks 4 --seed 0 --device cpu "$@"
cp "$work/base_vfn.safetensors" cldyn_cli/weights/base_vfn.safetensors
echo "installed cldyn_cli/weights/base_vfn.safetensors"
