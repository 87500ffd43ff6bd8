# Sourced by every recipe: run from the repository root with this checkout's gsa importable, and pick the results
# folder. OUT (if set) is where a recipe writes; otherwise benchmarks/results/<gpu> (h100, h200, ..., or cpu), the
# folder `gsa bench` writes to by default and the results page cites.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
OUT=${OUT:-$($PY -c "from gsa.bench.common import default_path, pick_device; print(default_path(pick_device(None), ''))")}
mkdir -p "$OUT"
