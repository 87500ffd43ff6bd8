#!/usr/bin/env bash
# MQAR in Zoology's model and example format (results page, "MQAR"): every job of JOBS x SEEDS trains side by side on
# the one GPU with configs/mqar-zoology-d$WIDTH.toml, then mqar_summary.py tabulates the accuracy at each pair count.
#   bash benchmarks/recipes/mqar.sh                                        # d = 128: GSA, ABC, attention, 7000 steps
#   WIDTH=64 STEPS=28000 SEEDS="0 1 2 3" bash benchmarks/recipes/mqar.sh  # d = 64: GSA and ABC (2 heads), four seeds
#   JOBS="gsa gsa+model.gate_bias=true" bash benchmarks/recipes/mqar.sh   # any overrides after a mixer name
# A job is MIXER[+KEY=VALUE...]: the mixer (gsa, abc, attention) and trainer overrides for that job alone. Defaults:
# JOBS "gsa abc attention+model.num_heads=2" at d = 128 and "gsa abc+model.num_heads=2" at d = 64; SEEDS "0";
# STEPS: the config's train.max_steps; EXTRA: overrides for every job.
# Resumable: LIMIT=s stops every job after s seconds of training (it evaluates and checkpoints), and running the same
# command again resumes each job where it stopped (same schedule, data order and random state); a job that has
# reached STEPS is skipped. Four jobs at d = 64 run ~30 steps/s each on an H200, so 28000 steps take two ~8-minute
# calls: LIMIT=470, twice. Runs live in RUNS (default runs/mqar; checkpoints ~7 MB a job): keep that folder between
# calls.
# Writes mqar-d$WIDTH.json and .png (accuracy at every evaluation, by job and seed) to $OUT (default
# benchmarks/results/<gpu>/), and each job's train.log and metrics.jsonl under RUNS.
source "$(dirname "$0")/common.sh"
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # many jobs share one GPU
WIDTH=${WIDTH:-128}; SEEDS=${SEEDS:-0}; LIMIT=${LIMIT:-0}; RUNS=${RUNS:-runs/mqar}
CONFIG=configs/mqar-zoology-d$WIDTH.toml
[ -f "$CONFIG" ] || { echo "no $CONFIG (WIDTH is 64 or 128)"; exit 2; }
if [ "$WIDTH" = 128 ]; then JOBS=${JOBS:-"gsa abc attention+model.num_heads=2"}
else JOBS=${JOBS:-"gsa abc+model.num_heads=2"}; fi
STEPS=${STEPS:-$($PY -c "import sys; from gsa.train.config import load_config; print(load_config(sys.argv[1]).train.max_steps)" \
  "$CONFIG")}

finished() {  # finished RUN_DIR: the run has logged its evaluation at step STEPS
  [ -f "$1/metrics.jsonl" ] && $PY - "$1" "$STEPS" <<'PY'
import sys
from gsa.train.metrics import read_metrics
sys.exit(0 if any(r.get("step") == int(sys.argv[2]) and "mqar_acc" in r for r in read_metrics(sys.argv[1])) else 1)
PY
}

DIRS=()
for job in $JOBS; do
  mixer=${job%%+*}; more=""
  [ "$job" != "$mixer" ] && more=$(echo "${job#*+}" | tr '+' ' ')
  for seed in $SEEDS; do
    dir=$RUNS/d$WIDTH-$(echo "$job" | tr '+="' '__-')-seed$seed; DIRS+=("$dir"); mkdir -p "$dir"
    if finished "$dir"; then echo "$dir: at step $STEPS already"; continue; fi
    ARGS=(model.mixer="\"$mixer\"" seed="$seed" train.max_steps="$STEPS" train.progress=false train.log_every=100)
    [ "$LIMIT" -gt 0 ] && ARGS+=(train.time_limit_s="$LIMIT")
    echo "=== $(date -u +%FT%TZ) LIMIT=$LIMIT" >> "$dir/train.log"
    # shellcheck disable=SC2086
    $PY -m gsa.train --config "$CONFIG" --output-dir "$dir" --resume "${ARGS[@]}" $more ${EXTRA:-} \
      >> "$dir/train.log" 2>&1 &
  done
done
wait
for dir in "${DIRS[@]}"; do echo "== $dir"; grep -E "MQAR accuracy|time limit|Error" "$dir/train.log" | tail -2; done
$PY benchmarks/recipes/mqar_summary.py --out "$OUT/mqar-d$WIDTH.json" "${DIRS[@]}"
