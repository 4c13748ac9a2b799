#!/usr/bin/env bash
# The detection closed loop end to end on synthetic M3FD scenes, on a CPU, offline:
#   1. synthetic infrared/visible street scenes with YOLO labels (M3FD layout);
#   2. base fusion of every scene with the base model;
#   3. a YOLOv8n detector trained from scratch on the base-fused training images with Ultralytics'
#      own trainer (`cldyn yolo train`), and, for the cross-detector check, a YOLO11n as well;
#   4. `cldyn compensate --plugin yolo` trains the semantic compensation against the frozen YOLOv8n;
#   5. the test scenes fused with the compensation, and base and compensated fusion scored by both
#      detectors (`cldyn eval --task det`): the detector the compensation was trained with, and the other.
# Sizes are for a 2-core CPU (about 10-15 minutes with the defaults); raise them on a real machine:
#   N (scenes), SIZE, IMGSZ, EPOCHS, BATCH, STEPS; CROSS=0 skips the second detector.
# At these sizes the detectors trained from scratch reach only mAP50 of about 0.05-0.1 on 20 test
# scenes, so base vs compensated differences are within noise: the script shows the workflow; a
# meaningful comparison needs (many) more scenes, epochs and compensation steps.
# Everything Ultralytics writes (settings, runs) goes under $WORK/ultralytics; nothing is downloaded.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: runs repeat bit for bit
cd "$(dirname "$0")/.."
cldyn=${CLDYN:-cldyn}
python=${PYTHON:-python}
work=${WORK:-build/yolo-closed-loop}
N=${N:-100}          # every fifth scene is a test scene
SIZE=${SIZE:-256x192}
IMGSZ=${IMGSZ:-192}   # detector input; the compensation trains on scenes letterboxed to it
EPOCHS=${EPOCHS:-40}
BATCH=${BATCH:-8}
STEPS=${STEPS:-40}
CROSS=${CROSS:-1}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export CLDYN_YOLO_DIR="$work/ultralytics"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

# The base model: $BASE if given, else the one shipped with cldyn.
base_args=()
if [[ -n "${BASE:-}" ]]; then base_args=(--base "$BASE"); fi

stamp "1. synthetic scenes"
$cldyn synth "$work/m3fd" --n "$N" --size "$SIZE" --seed 11 --layout m3fd --quiet

stamp "2. base fusion (train -> detector training set, test -> evaluation)"
det="$work/det"
for split in train test; do
    target=$([[ $split == train ]] && echo train || echo val)
    $cldyn fuse "$work/m3fd/ir/$split" "$work/m3fd/vi/$split" -o "$det/images/$target" \
        ${base_args[@]+"${base_args[@]}"} --device cpu --overwrite --quiet
    mkdir -p "$det/labels"
    rm -rf "$det/labels/$target"
    cp -r "$work/m3fd/labels/$split" "$det/labels/$target"
done
cat > "$det/data.yaml" <<EOF
path: $det
train: images/train
val: images/val
names: [People, Car, Bus, Motorcycle, Lamp, Truck]
EOF

stamp "3. train YOLOv8n (and YOLO11n for the cross-detector check) on the base-fused images"
# Ultralytics' own trainer, offline; the two detectors train side by side (one core each).
train() {  # name model seed
    $cldyn yolo train "$det/data.yaml" -o "$work/$1.pt" --model "$2" --epochs "$EPOCHS" --imgsz "$IMGSZ" \
        --batch "$BATCH" --seed "$3" --device cpu --quiet > "$work/train-$1.log" 2>&1 \
        || { tail -20 "$work/train-$1.log"; echo "training $1 failed, see $work/train-$1.log"; return 1; }
}
$python -c "import cldyn_plugin_yolo._env as e; e.ultralytics_ready()"  # settings file once, before two processes
detectors=(yolov8n)
pids=()
train yolov8n yolov8n.yaml 0 & pids+=($!)
if [[ $CROSS == 1 ]]; then
    train yolo11n yolo11n.yaml 1 & pids+=($!)
    detectors+=(yolo11n)
fi
for pid in "${pids[@]}"; do wait "$pid"; done

stamp "4. compensation against the frozen YOLOv8n (imgsz comes from its checkpoint)"
$cldyn compensate --plugin yolo --data "$work/m3fd" --task-weights "$work/yolov8n.pt" \
    -o "$work/rsc.safetensors" --steps "$STEPS" --batch-size 4 --seed 0 --device cpu --quiet \
    ${base_args[@]+"${base_args[@]}"}

stamp "5. compensated fusion of the test scenes, then detection metrics"
$cldyn fuse "$work/m3fd/ir/test" "$work/m3fd/vi/test" -o "$work/fused-comp" --task det \
    --rsc "$work/rsc.safetensors" --task-weights "$work/yolov8n.pt" --device cpu --overwrite --quiet
if [[ $CROSS == 1 ]]; then
    # The other detector can also condition the compensation: fuse with its features
    # (YOLO11n's deepest neck output is model.22; the compensation was trained on YOLOv8n's model.21).
    $cldyn fuse "$work/m3fd/ir/test" "$work/m3fd/vi/test" -o "$work/fused-comp-yolo11n" --task det \
        --rsc "$work/rsc.safetensors" --task-weights "$work/yolo11n.pt" --feature-layer model.22 \
        --device cpu --overwrite --quiet
fi
for d in "${detectors[@]}"; do
    # Cross-detector: scoring with another detector is only other --task-weights.
    folders=("$det/images/val" "$work/fused-comp")
    if [[ $d == yolo11n ]]; then folders+=("$work/fused-comp-yolo11n"); fi
    $cldyn eval --task det --data "$work/m3fd" --split test "${folders[@]}" --task-weights "$work/$d.pt" \
        --batch-size 8 --json "$work/eval-$d.json" --device cpu --quiet
done

stamp "done"
$python - "$work" "${detectors[@]}" <<'PY'
import json, sys
from pathlib import Path
work, detectors = Path(sys.argv[1]), sys.argv[2:]
kinds = {"val": "base", "fused-comp": "compensated (RSC <- yolov8n)",
         "fused-comp-yolo11n": "compensated, yolo11n features"}
print(f"\n{'detector':<9} {'fusion':<31} {'mAP50':>7} {'mAP50-95':>9}")
for d in detectors:
    for folder, entry in json.loads((work / f"eval-{d}.json").read_text())["methods"].items():
        kind = kinds[folder]
        m = entry["metrics"]
        print(f"{d:<9} {kind:<31} {m['mAP50'] or 0:7.4f} {m['mAP50-95'] or 0:9.4f}")
PY
