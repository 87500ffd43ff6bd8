#!/usr/bin/env bash
# MQAR runs longer than one device call (issue 4): each call trains every job toward NSTEPS steps for at most LIMIT
# seconds, side by side on the one GPU, resuming from the job's checkpoint when one was carried in. The trainer's time
# limit stops a job with an evaluation and a checkpoint, and --resume continues the same schedule, data order and RNG,
# so N calls give the curve of one uninterrupted run (tests/train/test_trainer.py proves resume exact on CPU).
#   first call:  WIDTH=64 NSTEPS=28000 LIMIT=470 JOBS="zoo-gsa-lr1e-2 zoo-abc-lr1e-2+model.num_heads=2" \
#                  bash benchmarks/scripts/h200_mqar_long.sh
#   here, after each call (N: the call's files_at):
#                  rm -rf runs/long && mkdir -p runs/long && for t in /work/.device/N/long-*.tar; do
#                  tar xf "$t" -C runs/long; done
#   later calls: the same command, with carry=["runs/long"]; a job that has reached NSTEPS is not run again.
# runs/long is git-ignored and does not outlive the session: plan whole runs within one session's device time (a
# run cut short restarts from step 0 next session, as session 25's seed 2 did; bf16 on the GPU does not repeat a
# seed's curve, so the rerun is a new draw).
# Job names as in h100_mqar2.sh (benchmarks/scripts/mqar_jobs.sh); EXTRA: more overrides for every job. Each job's run
# directory (checkpoint, metrics.jsonl, the logs of every call) comes back as $OUT/long-<job>.tar (at most 8 jobs: the
# device returns 8 files); its exported model is left out (the checkpoint holds the weights).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
WIDTH=${WIDTH:-64}; LIMIT=${LIMIT:-470}; NSTEPS=${NSTEPS:-28000}; EVAL_EVERY=${EVAL_EVERY:-3500}
JOBS=${JOBS:-"zoo-gsa-lr1e-2 zoo-abc-lr1e-2+model.num_heads=2"}
. benchmarks/scripts/mqar_jobs.sh
R=runs/long; mkdir -p "$R"
finished() {  # finished <run dir>: the run has logged its evaluation at step NSTEPS
  [ -f "$1/metrics.jsonl" ] && python - "$1" "$NSTEPS" <<'EOF'
import sys
from gsa.train.metrics import read_metrics
sys.exit(0 if any(r.get("step") == int(sys.argv[2]) and "mqar_acc" in r for r in read_metrics(sys.argv[1])) else 1)
EOF
}
declare -A DIR
for j in $JOBS; do
  d="$R/d$WIDTH-$(echo "$j" | tr '+="' '__-')"; DIR[$j]=$d; mkdir -p "$d"
  if finished "$d"; then echo "$j: already at step $NSTEPS"; continue; fi
  # shellcheck disable=SC2046
  set -- $(job_args "$j")
  cfg=$1; shift
  echo "=== call of $(date -u +%FT%TZ), LIMIT=$LIMIT" >> "$d/train.log"
  timeout $((LIMIT + 120)) python -m gsa.train --config "$cfg" --output-dir "$d" --resume "$@" \
    train.max_steps="$NSTEPS" train.time_limit_s="$LIMIT" train.eval_every="$EVAL_EVERY" train.checkpoint_every=0 \
    train.keep_checkpoints=1 train.progress=false train.log_every=100 ${EXTRA:-} >> "$d/train.log" 2>&1 &
done
wait
for j in $JOBS; do
  d=${DIR[$j]}
  echo "== d$WIDTH $j"
  # this call's part of the log (from its header on)
  awk '/^=== call of /{part=""} {part=part $0 "\n"} END{printf "%s", part}' "$d/train.log" |
    grep -E "resumed from|time limit|MQAR accuracy|Error" | tail -3
  b=$(basename "$d")
  tar cf "$OUT/long-$b.tar" -C "$R" --exclude="$b/model" "$b"  # the export only: the checkpoint keeps its model/
done
