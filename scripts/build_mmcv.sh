#!/usr/bin/env bash
# Build (once) and cache a wheel of MMCV 2.1.0 with its compiled ops (mmcv.ops),
# for the Python environment given as the first argument.
#
# Why: MMSegmentation 1.2.2 imports mmcv.ops at import time, so mmcv-lite is not
# enough, and PyPI only has a source distribution of MMCV 2.1.0 for current
# PyTorch. That sdist cannot be built as shipped against PyTorch >= 2.10:
#   1. its setup.py imports pkg_resources, which setuptools >= 81 no longer ships;
#   2. it compiles with -std=c++14/c++17, but PyTorch's headers now need C++20.
# This script works around both:
#   1. a throw-away overlay (pip install --target) with setuptools<81 is put on
#      PYTHONPATH while pip downloads and builds the sdist;
#   2. every "-std=c++14"/"-std=c++17" (and MSVC "/std:c++14|17") in setup.py is
#      rewritten to c++20 by a one-line sed before the build.
# The build uses the target environment's torch (pip wheel --no-build-isolation).
#
# Usage:
#   scripts/build_mmcv.sh [PYTHON_OR_VENV_DIR] [--force]
#     PYTHON_OR_VENV_DIR  python executable, or a venv directory (default: python3)
#     --force             rebuild even if a cached wheel exists
# Environment:
#   CLDYN_WHEEL_CACHE  where the wheel is kept (default ~/.cache/cldyn/wheels)
#   MAX_JOBS           parallel compile jobs (default: number of CPUs)
#   FORCE_CUDA         0 (default): CPU ops only. 1: also build the CUDA ops
#                      (needs nvcc matching torch.version.cuda; set
#                      TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0"). The cached wheel
#                      is then the GPU variant; use a separate CLDYN_WHEEL_CACHE
#                      to keep both.
#   BUILD_NICE         niceness of the compiler processes (default 10)
# Time: 77 C++ files; about 40 minutes measured with MAX_JOBS=1 under nice 19 on a busy 2-core
# machine (gcc 12), less with MAX_JOBS=2 on an idle one.
# Afterwards install with:
#   pip install --find-links "$CLDYN_WHEEL_CACHE" mmcv==2.1.0
# Idempotent: when $CACHE/mmcv-2.1.0-<python tag>-*.whl exists and was built for
# the same torch version (stamp file next to it), it exits at once.
set -euo pipefail

MMCV_VERSION=2.1.0
TARGET=""
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) TARGET="$arg" ;;
  esac
done
TARGET=${TARGET:-python3}
if [ -d "$TARGET" ]; then PY="$TARGET/bin/python"; else PY="$TARGET"; fi
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "build_mmcv: no python at '$PY'" >&2; exit 2
fi

CACHE=${CLDYN_WHEEL_CACHE:-$HOME/.cache/cldyn/wheels}
FORCE_CUDA=${FORCE_CUDA:-0}
mkdir -p "$CACHE"

info=$("$PY" - <<'EOF'
import sys
try:
    import torch
except ImportError:
    print("NOTORCH"); sys.exit(0)
print(f"cp{sys.version_info[0]}{sys.version_info[1]} {torch.__version__}")
EOF
)
if [ "$info" = "NOTORCH" ]; then
  echo "build_mmcv: torch is not installed in $PY; install torch first" >&2; exit 2
fi
PYTAG=${info%% *}
TORCH_VERSION=${info#* }
STAMP_WANT="torch=$TORCH_VERSION cuda=$FORCE_CUDA"

shopt -s nullglob
existing=("$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl)
shopt -u nullglob
if [ "$FORCE" = 0 ] && [ ${#existing[@]} -gt 0 ]; then
  stamp_file="${existing[0]}.stamp"
  stamp=$(cat "$stamp_file" 2>/dev/null || echo "$STAMP_WANT")
  if [ "$stamp" = "$STAMP_WANT" ]; then
    echo "build_mmcv: cached ${existing[0]} ($stamp); nothing to do"
    exit 0
  fi
  echo "build_mmcv: cached wheel was built for '$stamp', need '$STAMP_WANT': rebuilding"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cldyn-mmcv.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
start=$(date +%s)

# Build helpers, outside the target environment: setuptools with pkg_resources,
# and ninja when the machine has none (parallel compile, honours MAX_JOBS).
helpers=("setuptools>=64,<81" "wheel")
command -v ninja >/dev/null 2>&1 || helpers+=("ninja")
"$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$WORK/overlay" "${helpers[@]}"
export PYTHONPATH="$WORK/overlay${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$WORK/overlay/bin:$PATH"

echo "build_mmcv: downloading mmcv==$MMCV_VERSION sdist"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
  --no-binary :all: --no-build-isolation -d "$WORK/dl" "mmcv==$MMCV_VERSION"
tar -xzf "$WORK/dl/mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
SRC="$WORK/mmcv-$MMCV_VERSION"

# Patch: C++ standard 14/17 -> 20 (gcc >= 10; nvcc from CUDA 12 on).
sed -i -E 's#([-/])std[=:]c\+\+1[47]#\1std=c++20#g; s#/std=c\+\+20#/std:c++20#g' "$SRC/setup.py"
if grep -q -E '[-/]std[=:]c\+\+1[47]' "$SRC/setup.py"; then
  echo "build_mmcv: patching the C++ standard failed" >&2; exit 1
fi

NJOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}
echo "build_mmcv: building with $PY (torch $TORCH_VERSION), FORCE_CUDA=$FORCE_CUDA, MAX_JOBS=$NJOBS"
MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=$NJOBS \
  nice -n "${BUILD_NICE:-10}" "$PY" -m pip wheel --disable-pip-version-check \
  --no-deps --no-build-isolation -w "$WORK/wheel" "$SRC"

shopt -s nullglob
built=("$WORK/wheel"/mmcv-"$MMCV_VERSION"-*.whl)
shopt -u nullglob
if [ ${#built[@]} -ne 1 ]; then
  echo "build_mmcv: no wheel produced" >&2; exit 1
fi
rm -f "$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl "$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl.stamp
name=$(basename "${built[0]}")
cp "${built[0]}" "$CACHE/$name.part"
mv "$CACHE/$name.part" "$CACHE/$name"
echo "$STAMP_WANT" >"$CACHE/$name.stamp"
echo "build_mmcv: cached $CACHE/$name after $(( $(date +%s) - start ))s"
