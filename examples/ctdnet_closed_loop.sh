#!/usr/bin/env bash
# The salient-object closed loop end to end on synthetic VT5000 scenes, on a CPU, offline:
#   1. synthetic thermal/visible street scenes with saliency masks (VT5000 layout: {Train,Test}/{RGB,T,GT});
#   2. CTDNet-18 trained from scratch on the base-fused training scenes (`cldyn ctdnet train`);
#   3. `cldyn compensate --plugin ctdnet` trains the semantic compensation against the frozen CTDNet
#      (task feature: fuse23.bn_2);
#   4. the test scenes fused by the base network and with the compensation (`cldyn fuse --task sod`);
#   5. CTDNet scores base fusion, compensated fusion and, for reference, the visible images alone
#      (`cldyn eval --task sod`: F-measure, E-measure, S-measure, MAE).
# Sizes are for a 2-core CPU (about 10 minutes with the defaults); raise them on a real machine:
#   N (scenes), SIZE (scene size), NET (CTDNet input size, 352 in the paper), CTD_STEPS, BATCH,
#   STEPS (compensation steps). Nothing is downloaded; BACKBONE=resnet18.pth starts CTDNet's
#   encoder from ImageNet weights if you have them.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: runs repeat bit for bit
cd "$(dirname "$0")/.."
cldyn=${CLDYN:-cldyn}
python=${PYTHON:-python}
work=${WORK:-build/ctdnet-closed-loop}
N=${N:-60}            # every fifth scene is a test scene
SIZE=${SIZE:-160x128}
NET=${NET:-128}
CTD_STEPS=${CTD_STEPS:-150}
BATCH=${BATCH:-8}
STEPS=${STEPS:-40}
mkdir -p "$work"
work=$(cd "$work" && pwd)
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

# The base model: $BASE if given, else the one shipped with cldyn.
base_args=()
if [[ -n "${BASE:-}" ]]; then base_args=(--base "$BASE"); fi
fused_with=()
[[ ${#base_args[@]} -gt 0 ]] && fused_with=(--fused-with "${base_args[1]}")
backbone=()
[[ -n "${BACKBONE:-}" ]] && backbone=(--backbone-weights "$BACKBONE")

stamp "1. synthetic scenes"
$cldyn synth "$work/vt5000" --n "$N" --size "$SIZE" --seed 11 --layout vt5000 --quiet

stamp "2. train CTDNet-18 on the base-fused training scenes"
$cldyn ctdnet train "$work/vt5000" -o "$work/ctdnet.safetensors" --steps "$CTD_STEPS" --batch-size "$BATCH" \
    --size "$NET" --seed 0 --device cpu --quiet ${fused_with[@]+"${fused_with[@]}"} ${backbone[@]+"${backbone[@]}"}

stamp "3. compensation against the frozen CTDNet"
$cldyn compensate --plugin ctdnet --data "$work/vt5000" --task-weights "$work/ctdnet.safetensors" \
    -o "$work/rsc.safetensors" --steps "$STEPS" --batch-size 4 --seed 0 --device cpu --quiet \
    ${base_args[@]+"${base_args[@]}"}

stamp "4. fuse the test scenes: base, and compensated for sod"
test_split="$work/vt5000/Test"
$cldyn fuse "$test_split/T" "$test_split/RGB" -o "$work/fused/base" ${base_args[@]+"${base_args[@]}"} \
    --device cpu --overwrite --quiet
$cldyn fuse "$test_split/T" "$test_split/RGB" -o "$work/fused/compensated" --task sod --rsc "$work/rsc.safetensors" \
    --task-weights "$work/ctdnet.safetensors" --device cpu --overwrite --quiet

stamp "5. CTDNet on base vs compensated fusion (and on the visible images alone)"
$cldyn eval --task sod --data "$work/vt5000" --split test "$work/fused/base" "$work/fused/compensated" \
    "$test_split/RGB" --task-weights "$work/ctdnet.safetensors" --json "$work/metrics.json" \
    --device cpu --quiet
$python - "$work/metrics.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))["methods"]
base, comp = doc["base"]["metrics"], doc["compensated"]["metrics"]
for key in ("maxF", "meanF", "adpF", "maxE", "meanE", "adpE", "Sm", "MAE"):
    better = (comp[key] < base[key]) if key == "MAE" else (comp[key] > base[key])
    print(f"{key:6s} base {base[key]:.4f}  compensated {comp[key]:.4f}  {'better' if better else 'not better'}")
EOF
stamp "done: $work"
