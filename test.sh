#!/usr/bin/env bash
# The test command: create (or reuse) a local venv, install nanoocr with its dev extras, run pytest.
#   bash test.sh                 # the whole suite
#   bash test.sh -k tokenizer    # extra arguments go to pytest
#   bash test.sh -m "not slow"   # the quick loop (CONTRIBUTING.md)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${NANOOCR_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: on CPU machines here 2.13.0 installs the CPU build from local disk; an
# unpinned torch would pull a multi-GB CUDA build. GPU users: install a CUDA torch first (README).
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
# Reinstall only when pyproject.toml (the dependencies, the dev extras) changed since the last
# install into this venv, or the venv's editable install points at another checkout: the stamp
# holds both. Delete the stamp to force a reinstall.
STAMP="$VENV/.nanoocr-install-stamp"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $(pwd)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  pip install -q -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# unused imports and import order first: seconds, and a failure names the file and line
ruff check --select F,I nanoocr scripts tasks tests dev
python -m pytest -q --durations=15 "$@"
