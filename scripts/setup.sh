#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the tested pins and the package (editable).
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 9), "Python >= 3.9 needed, found " + sys.version'
# A new .venv takes about 6.6 GB (PyPI's torch 2.14.1 is a CUDA build). Check the free space first:
# pip otherwise stops half-way with "[Errno 28] No space left on device" and a broken .venv.
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" - "${SETUP_MIN_FREE_GB:-8}" <<'PY' || exit 2
import os, shutil, sys
need = float(sys.argv[1])
free = shutil.disk_usage(".").free / 1e9
if free < need:
    sys.exit(f"scripts/setup.sh: {free:.1f} GB free on the disk holding {os.getcwd()}, "
             f"the new .venv needs about {need:g} GB (SETUP_MIN_FREE_GB). Free some space "
             "(old clones or virtual environments) and run it again.")
PY
fi
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=23"
.venv/bin/python -m pip install --quiet -c requirements/tested.txt -e ".[dev]"
.venv/bin/python -c 'import nni_topo_pruner, nni, torch, gudhi; print("nni-topo-pruner", nni_topo_pruner.__version__, "| nni", nni.__version__, "| torch", torch.__version__, "| gudhi", gudhi.__version__)'
