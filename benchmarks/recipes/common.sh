# Sourced by every recipe: run from the repository root with this checkout's gsa importable, and pick the results
# folder. OUT (if set) is where a recipe writes; otherwise benchmarks/results/<gpu> (h100, h200, ..., or cpu), the
# folder the results page cites (`gsa bench` run by hand writes under runs/bench/ instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/$($PY -c "from gsa.bench.common import device_slug, pick_device; print(device_slug(pick_device(None)))")}
mkdir -p "$OUT"
