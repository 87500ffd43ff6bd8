#!/usr/bin/env bash
# Two device calls on one warm H100 (prepared 2026-11-24, session 9; not yet run), issue 5: recipe (b) alone on the
# GPU for ~40M tokens (the target's budget is 50M), with 2K-token windows in stage 2 (passkey needs > 512 tokens of
# context) and q/k adapted in stage 1 as well as the slot projection. Session 8's run (5.98M tokens, three jobs
# sharing the GPU at 35K tokens/s each) reached recovery 0.262.
#   MODE=train  : needs /tmp/keep/t2r.tar.part-aa, -ab (left by h100_next_decode.sh) and .carry/t2r.tar.part-ac
#                 carried; unpacks into /tmp/keep/t2r (kept while the machine stays warm), trains, keeps the model.
#   MODE=report : the next call: scripts/t2r_report.py for the teacher, the window baseline and the student.
# Outputs in $OUT/t2r-long.tar.
set -u
source benchmarks/scripts/t2r_carry.sh
t2r_outputs tl t2r-long.tar
t2r_workspace "${MODE:-train}"
if [ "${MODE:-train}" = train ]; then
  timeout 120 python scripts/prepare_t2r_data.py teacher --cache .cache/t2r > "$R/teacher.log" 2>&1
  echo "teacher rc=$? at $((SECONDS - START)) s"
  timeout 100 python -m gsa.train --config configs/t2r-stage1.toml --output-dir runs/tl-stage1 "$TOK" "${COMMON[@]}" \
    'distill.train_params=["f_proj", "q_proj", "k_proj"]' train.max_steps=150 optim.warmup_steps=20 \
    train.time_limit_s=70 > "$R/stage1.log" 2>&1
  echo "stage1 rc=$? at $((SECONDS - START)) s"; grep -E "held-out|time limit|Error" "$R/stage1.log" | tail -2
  # 2K windows, 16 a step (32K tokens); ~1100 steps is ~36M tokens at the ~85K tokens/s expected alone
  timeout $((575 - (SECONDS - START))) python -m gsa.train --config configs/t2r-stage2.toml --output-dir runs/tl-stage2 \
    "$TOK" "${COMMON[@]}" 'model.path="runs/tl-stage1/model"' data.seq_len=2048 train.micro_batch_size=16 \
    train.max_steps=1100 optim.warmup_steps=100 train.time_limit_s=$((520 - (SECONDS - START))) \
    > "$R/stage2.log" 2>&1
  echo "stage2 rc=$? at $((SECONDS - START)) s"; grep -E "held-out|time limit|Error" "$R/stage2.log" | tail -2
  cp runs/tl-stage1/metrics.jsonl "$R/stage1.metrics.jsonl" 2>/dev/null
  cp runs/tl-stage2/metrics.jsonl "$R/stage2.metrics.jsonl" 2>/dev/null
  rm -rf $K/tl-student && cp -r runs/tl-stage2/model $K/tl-student && echo "student kept in $K/tl-student"
else
  timeout 60 python -m gsa convert --from .cache/t2r/teacher --to runs/converted --num-slots 64 > "$R/convert.log" 2>&1
  t2r_report 585 t2r-report --student converted=runs/converted --student b-long=$K/tl-student --passkey-examples 50 \
    --decode-tokens 64
fi
