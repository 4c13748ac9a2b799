#!/usr/bin/env bash
# Set up a virtual environment from this repository's own files (cldyn and its three task
# plugins) and run the test suite. The MMCV wheel that the segmentation plugin needs is compiled
# once and cached (scripts/build_mmcv.sh); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
wheels="${CLDYN_WHEEL_CACHE:-$HOME/.cache/cldyn/wheels}"
python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet -c scripts/constraints.txt)
"${pip[@]}" -e ".[test,export]"
bash scripts/build_mmcv.sh .venv/bin/python
"${pip[@]}" --find-links "$wheels" -e plugins/cldyn-plugin-yolo -e plugins/cldyn-plugin-ctdnet \
    -e plugins/cldyn-plugin-mmseg
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # the small test networks run fastest on one thread
.venv/bin/python -m pytest tests plugins/cldyn-plugin-yolo/tests plugins/cldyn-plugin-ctdnet/tests \
    plugins/cldyn-plugin-mmseg/tests "$@"
