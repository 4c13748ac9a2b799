#!/usr/bin/env bash
# Set up a virtual environment from this repository's own files and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e ".[test,export]"
.venv/bin/python -m pytest tests "$@"
