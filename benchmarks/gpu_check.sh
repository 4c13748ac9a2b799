#!/usr/bin/env bash
# Every GPU check of cldyn in one run, for a machine with a CUDA GPU and PyTorch already installed
# (it needs no network: cldyn runs from this checkout, its other needs are PyTorch's usual company:
# numpy, scipy, pillow, safetensors, pyyaml, typer, rich, pluggy, pytest).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default build/gpu-check
#
# Writes to OUT_DIR: gpu.txt (the GPU and PyTorch), tests.txt (the tests that need a GPU and are
# skipped elsewhere), and one file per benchmark run with --device cuda. A failing step is
# recorded and the next one still runs; the exit status is that of the last failure, or 0.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu-check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=0

step() {  # step NAME COMMAND...: run COMMAND, its output to OUT_DIR/NAME.txt
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" > "$out/$name.txt" 2>&1; then
        echo "   failed (see $out/$name.txt)"
        status=1
    fi
}

step gpu "$python" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
step tests "$python" -m pytest -q -p no:cacheprovider tests/test_inference.py tests/test_train_base.py \
    tests/test_closed_loop.py -k "gpu or cuda"
step profile_fuse "$python" benchmarks/profile_fuse.py --device cuda --repeats 5
step bench_fuse "$python" benchmarks/bench_fuse.py --device cuda --sizes 640x480,1920x1080,4000x3000
step bench_fuse_compensated "$python" benchmarks/bench_fuse.py --device cuda --compensated --sizes 640x480,1920x1080 \
    --query-strides 1,2,4
step bench_train_base "$python" benchmarks/bench_train_base.py --device cuda --repeats 3
step bench_a2si "$python" benchmarks/bench_a2si.py --device cuda
exit $status
