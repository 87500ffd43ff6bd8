#!/usr/bin/env bash
# One device call (H100), issue 4: MQAR jobs side by side on the one GPU, each with the same time budget, with the
# learning-rate schedule fitted to that budget: a short calibration run of all jobs at once measures each job's
# steps/s, then each job runs with max_steps = steps/s x LIMIT, so its cosine decay ends when its time does.
# Recipe as in configs/mqar-*.toml (Zoology-style length mix, 256 sequences a step, lr 1e-3, sparse logits), tested
# at 512 tokens with 4..64 pairs (1000 examples each).
#   WIDTH=128 LIMIT=470 bash benchmarks/scripts/h100_mqar2.sh      (jobs: GSA with/without short conv, ABC, Llama)
#   WIDTH=64  JOBS="gsa-conv abc-conv llama" ...
#   JOBS="gsa-conv gsa-conv-tau32" ...      (gsa-conv-tauN: gate_logit_normalizer N instead of 8: slower forgetting)
#   JOBS="gsa-conv gsa-conv-bias" ...       (gsa-conv-bias: model.gate_bias=true, W_f's bias spread over the slots)
#   JOBS="gsa-conv-ub4" ...                 (gsa-conv-ubB: W_f's bias B for every slot: all start slow-forgetting)
#   JOBS="gsa-conv-m256" ...                (gsa-conv-mN: N slots a head instead of 64)
#   JOBS="gsa-conv gsa-conv-lr3e-3" ...     (-lrX after any job name: learning rate X instead of the config's)
#   JOBS="gsa-conv+model.num_slots=32+model.gate_logit_normalizer=16" ...
#                                            (+KEY=VALUE after any job name: more overrides for that job alone)
#   JOBS="zoo-gsa zoo-abc zoo-attention" ... (Zoology's own model, gsa/models/zoology.py: gated convolutions alternating
#                                            with the mixer, no MLP; configs/mqar-zoology-d128.toml at WIDTH)
#   NSTEPS=12000 ...                         (no calibration: every job runs NSTEPS steps, LIMIT stays a safety stop)
#   EXTRA="train.compile=false" CAL=40 ...  (eager, as before session 13; the Llama configs stay eager: not measured compiled)
#   TRAINSET=direct MB=128 ...              (train on the tested setting itself, 512 tokens / 64 pairs, MB sequences a
#                                            step, as Zoology's figure-2 sweep and the GSA paper; default: the length mix)
# Outputs in $OUT/mqar.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/m; mkdir -p "$R"
# CAL: the calibration's seconds; the GSA configs compile their blocks (~35 s before the first steady step), so the
# calibration must run past that to see steady-state rows (40 s sufficed uncompiled)
WIDTH=${WIDTH:-128}; LIMIT=${LIMIT:-470}; CAL=${CAL:-120}  # EXTRA: more overrides (a smoke test on CPU)
JOBS=${JOBS:-"gsa-conv gsa-noconv abc-conv llama"}
TRAINSET=${TRAINSET:-mix}; MB=${MB:-256}
case $TRAINSET in
  mix) DATA="train.micro_batch_size=$MB" ;;
  direct) DATA="data.mqar_train_pairs=[64] data.mqar_train_seq_lens=[512] train.micro_batch_size=$MB" ;;
  *) echo "TRAINSET must be mix or direct, got $TRAINSET"; exit 2 ;;
esac
. benchmarks/scripts/mqar_jobs.sh  # job_args: a job name -> its config and overrides (needs WIDTH)
run() {  # run <dir> <time limit> <max steps> <eval examples> <name>
  local dir=$1 limit=$2 steps=$3 examples=$4 name=$5
  # shellcheck disable=SC2046
  set -- $(job_args "$name")
  local cfg=$1; shift
  timeout $((limit + 120)) python -m gsa.train --config "$cfg" --output-dir "$dir" "$@" \
    data.mqar_eval_examples="$examples" train.max_steps="$steps" train.eval_every=0 train.checkpoint_every=0 \
    train.progress=false train.log_every="${LOG_EVERY:-100}" train.time_limit_s="$limit" $DATA ${EXTRA:-}
}
declare -A STEPS
if [ -n "${NSTEPS:-}" ]; then
  for j in $JOBS; do STEPS[$j]=$NSTEPS; done
else
# 1. calibration: all jobs at once, as they will run
# (logged every 20 steps: the last row's rate is then steady-state, without the first steps' compilation)
for j in $JOBS; do LOG_EVERY=20 run "runs/cal/$j" "$CAL" 100000 16 "$j" > "$R/cal-$j.log" 2>&1 & done
wait
for j in $JOBS; do
  STEPS[$j]=$(python - "runs/cal/$j/metrics.jsonl" "$LIMIT" "$MB" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
# the first logged row's rate includes compilation (with train.compile=true, 35 s of a 40 s calibration in session
# 11, which then fell back to 100 steps): without a later row there is no steady-state rate to fit a schedule to
if len(rows) < 3 or rows[-1]["step"] - rows[0]["step"] < 40:
    sys.exit(f"calibration too short ({[r['step'] for r in rows]} logged): raise CAL")
rate = rows[-1]["tokens_per_s"] / (int(sys.argv[3]) * 512)  # steps/s (tokens_per_s counts micro_batch x seq_len)
print(int(rate * float(sys.argv[2]) * 0.97))
EOF
) || { echo "$j: ${STEPS[$j]}"; exit 1; }
  echo "$j: ${STEPS[$j]} steps in ${LIMIT} s (calibrated)"
done
fi
# 2. the runs
for j in $JOBS; do
  run "$R/run-$j" "$LIMIT" "${STEPS[$j]}" 1000 "$j" > "$R/mqar-d$WIDTH-$j.log" 2>&1 &
done
wait
for j in $JOBS; do
  cp "$R/run-$j/metrics.jsonl" "$R/mqar-d$WIDTH-$j.metrics.jsonl" 2>/dev/null; rm -rf "$R/run-$j/model" "$R/run-$j/checkpoints"
  echo "== d$WIDTH $j"; grep -E "MQAR accuracy|time limit|Error|stopped" "$R/mqar-d$WIDTH-$j.log" | tail -2
done
tar cf "$OUT/mqar.tar" -C "$OUT" m
