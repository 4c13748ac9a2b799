#!/usr/bin/env bash
# The segmentation closed loop end to end on synthetic FMB scenes, on a CPU, offline:
#   1. synthetic infrared/visible street scenes with class masks (FMB layout);
#   2. base fusion of every scene with the base model;
#   3. a tiny SegFormer (MiT encoder derived from MMSegmentation's shipped MiT-b0 config, see
#      $WORK/segformer-tiny.yaml) trained from scratch on the base-fused training images
#      (`cldyn mmseg train`, a short seeded loop with the segmentor's own loss);
#   4. `cldyn compensate --plugin mmseg` trains the semantic compensation against the frozen SegFormer;
#   5. the test scenes fused with the compensation (`cldyn fuse --task seg`), and base vs compensated
#      fusion scored with MMSegmentation's IoUMetric (`cldyn eval --task seg`): mIoU, mAcc, per-class IoU.
# Needs cldyn-plugin-mmseg installed (README of the plugin: MMCV is built once by scripts/build_mmcv.sh).
# Sizes are for a 2-core CPU (a few minutes with the defaults); raise them on a real machine:
#   N (scenes), SIZE (WxH), SEG_STEPS, STEPS (compensation), EMBED (MiT width: 32 = MiT-b0).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: runs repeat bit for bit
cd "$(dirname "$0")/.."
cldyn=${CLDYN:-cldyn}
python=${PYTHON:-python}
work=${WORK:-build/mmseg-closed-loop}
N=${N:-100}
SIZE=${SIZE:-160x128}
SEG_STEPS=${SEG_STEPS:-600}
STEPS=${STEPS:-60}
EMBED=${EMBED:-16}
mkdir -p "$work"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }
width=${SIZE%x*}
height=${SIZE#*x}

# The base model: $BASE if given, else the one shipped with cldyn.
base_args=()
if [[ -n "${BASE:-}" ]]; then base_args=(--base "$BASE"); fi

stamp "1. synthetic scenes (FMB layout, ${SIZE})"
$cldyn synth "$work/fmb" --n "$N" --size "$SIZE" --seed 11 --layout fmb --quiet

stamp "2. base fusion of both splits (train: the segmentor's training images; test: the baseline)"
for split in train test; do
    out=$([[ $split == train ]] && echo "$work/base-train" || echo "$work/fused-base")
    $cldyn fuse "$work/fmb/$split/Infrared" "$work/fmb/$split/Visible" -o "$out" \
        ${base_args[@]+"${base_args[@]}"} --device cpu --overwrite --quiet
done

stamp "3. train a tiny SegFormer on the base-fused training images"
cat > "$work/segformer-tiny.yaml" <<EOF
# MiT encoder of width $EMBED (32 = MiT-b0) with one block per stage, all-MLP head; 7 synthetic classes.
config: mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py
classes: [background, person, car, bus, motorcycle, lamp, truck]
size: [$height, $width]
mit_width: $EMBED
mit_blocks: 1
EOF
$cldyn mmseg train "$work/fmb" --images "$work/base-train" --task-config "$work/segformer-tiny.yaml" \
    -o "$work/segformer.pth" --steps "$SEG_STEPS" --batch-size 8 --lr 2e-3 --seed 0 --device cpu --quiet

stamp "4. compensation against the frozen SegFormer (config and classes come with its checkpoint)"
$cldyn compensate --plugin mmseg --data "$work/fmb" --task-weights "$work/segformer.pth" \
    -o "$work/rsc.safetensors" --steps "$STEPS" --batch-size 4 --seed 0 --device cpu --quiet \
    ${base_args[@]+"${base_args[@]}"}

stamp "5. compensated fusion of the test scenes, and base vs compensated segmentation"
$cldyn fuse "$work/fmb/test/Infrared" "$work/fmb/test/Visible" -o "$work/fused-comp" --task seg \
    --rsc "$work/rsc.safetensors" --task-weights "$work/segformer.pth" --device cpu --overwrite --quiet
$cldyn eval --task seg --data "$work/fmb" --split test "$work/fused-base" "$work/fused-comp" \
    --task-weights "$work/segformer.pth" --json "$work/seg-metrics.json" --device cpu --quiet
$python - "$work/seg-metrics.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
base, comp = (doc["methods"][m]["metrics"] for m in ("fused-base", "fused-comp"))
for key in ("mIoU", "mAcc", "aAcc"):
    b, c = base[key], comp[key]
    print(f"{key}: base {b:.4f}  compensated {c:.4f}  ({c - b:+.4f})")
EOF
stamp "done: $work"
