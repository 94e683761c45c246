#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the tested pins and the package (editable).
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 9), "Python >= 3.9 needed, found " + sys.version'
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=23"
.venv/bin/python -m pip install --quiet -c requirements/tested.txt -e ".[dev]"
.venv/bin/python -c 'import nni_topo_pruner, nni, torch, gudhi; print("nni-topo-pruner", nni_topo_pruner.__version__, "| nni", nni.__version__, "| torch", torch.__version__, "| gudhi", gudhi.__version__)'
