# Sourced by every recipe: run from the repository root with this checkout's gsa importable, and pick the results
# folder. OUT (if set) is where a recipe writes; otherwise benchmarks/results/<gpu> (h100, h200, ..., or cpu), the
# folder the results page cites (`gsa bench` run by hand writes under runs/bench/ instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/$($PY -c "from gsa.bench.common import device_slug, pick_device; print(device_slug(pick_device(None)))")}
mkdir -p "$OUT"

# token_cache PATH: PATH if given, else the one token cache under .cache/t2r/tokens (what `python
# scripts/prepare_t2r_data.py corpus` or `bash scripts/t2r_carry.sh unpack` leaves); exits with the reason, before
# any GPU work, unless it is a token cache directory (gsa.data's meta.json).
token_cache() {
  local path=${1:-}
  if [ -z "$path" ]; then
    local found
    shopt -s nullglob; found=(.cache/t2r/tokens/tokens-*/); shopt -u nullglob
    if [ ${#found[@]} -ne 1 ]; then
      echo "set TOKENS to a token cache: found ${#found[@]} under .cache/t2r/tokens" \
        "($(ls -d .cache/t2r/tokens/tokens-* 2>/dev/null | tr '\n' ' '));" \
        "build one with 'python scripts/prepare_t2r_data.py corpus' (docs/convert.md)" >&2
      exit 2
    fi
    path=${found[0]%/}
  fi
  [ -f "$path/meta.json" ] || { echo "TOKENS=$path is not a token cache directory (no meta.json)" >&2; exit 2; }
  echo "$path"
}

# teacher_dir PATH: PATH (default .cache/t2r/teacher, `python scripts/prepare_t2r_data.py teacher`); exits with the
# reason unless it holds a Hugging Face checkpoint (config.json).
teacher_dir() {
  local path=${1:-.cache/t2r/teacher}
  [ -f "$path/config.json" ] || { echo "TEACHER=$path is not a checkpoint directory (no config.json); build it with \
'python scripts/prepare_t2r_data.py teacher' (docs/convert.md)" >&2; exit 2; }
  echo "$path"
}
