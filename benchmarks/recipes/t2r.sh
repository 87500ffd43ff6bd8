#!/usr/bin/env bash
# Transformer -> GSA conversion with recall (results page, "T2R"): SmolLM2-135M-Instruct converted into a hybrid
# student (the teacher's attention over 64 recent + 4 sink tokens beside 64 GSA slots), stage 1
# (configs/t2r-hybrid-stage1.toml: f_proj and memory_scale fit each layer's attention output, half the windows passkey
# sequences) then stage 2 (configs/t2r-hybrid-stage2.toml: everything, KL to the teacher plus the passkey answers'
# cross-entropy), then scripts/t2r_report.py: held-out perplexity and recovery against the teacher and the
# sliding-window baseline, passkey retrieval at 256-2K tokens, by needle distance and on an unseen wording, and
# the zero-shot cloze / next-sentence tasks built from the held-out documents (teacher = ceiling).
#   bash benchmarks/recipes/t2r.sh                     # the configs' whole schedules: ~25 minutes on an H100
#   bash benchmarks/recipes/background.sh start t2r -- bash benchmarks/recipes/t2r.sh
#                                                      # past one 10-minute device call;
#   bash benchmarks/recipes/background.sh wait t2r 540 # then wait in the calls that follow
#   S1_TIME=180 S2_TIME=267 EXTRA='data.passkey_wording="passkey" data.passkey_min_length=0' \
#     bash benchmarks/recipes/t2r.sh                   # the results page's seed 0 / 1 rows (SEED=1), ~10 minutes
# Needs the teacher and a token cache (TEACHER, TOKENS; defaults .cache/t2r/teacher and the one token cache under
# .cache/t2r/tokens, checked before any stage; the results of 2026-11-24/25 used a 14M-token subset of it), built
# where PyPI and Debian are reachable: `python scripts/prepare_t2r_data.py all` (docs/convert.md).
# S1_TIME / S2_TIME: each stage's time limit in seconds; 0 (the default) runs the configs' whole schedules (600 and
# 1100 steps); 180 / 267 were the first runs' (stage 2 at 322-345 of its 1100 steps on an H100). EXTRA: config
# overrides for both stages.
# Writes t2r-recall-seed$SEED.json (the report) to $OUT (default benchmarks/results/<gpu>/); runs and logs under
# RUNS (default runs/t2r).
source "$(dirname "$0")/common.sh"
TEACHER=$(teacher_dir "${TEACHER:-}"); TOKENS=$(token_cache "${TOKENS:-}"); SEED=${SEED:-0}
S1_TIME=${S1_TIME:-0}; S2_TIME=${S2_TIME:-0}; RUNS=${RUNS:-runs/t2r}; mkdir -p "$RUNS"
COMMON=("data.tokens=\"$TOKENS\"" "model.teacher=\"$TEACHER\"" "distill.teacher=\"$TEACHER\"" seed="$SEED"
  train.progress=false train.checkpoint_every=0 train.eval_every=0 train.eval_sequences=64 train.log_every=20)
# shellcheck disable=SC2086
$PY -m gsa.train --config configs/t2r-hybrid-stage1.toml --output-dir "$RUNS/stage1-seed$SEED" "${COMMON[@]}" \
  train.time_limit_s="$S1_TIME" ${EXTRA:-} > "$RUNS/stage1-seed$SEED.log" 2>&1
COMMON=("${COMMON[@]/model.teacher=*/model.path=\"$RUNS/stage1-seed$SEED/model\"}")
# shellcheck disable=SC2086
$PY -m gsa.train --config configs/t2r-hybrid-stage2.toml --output-dir "$RUNS/stage2-seed$SEED" "${COMMON[@]}" \
  train.time_limit_s="$S2_TIME" ${EXTRA:-} > "$RUNS/stage2-seed$SEED.log" 2>&1
$PY scripts/t2r_report.py --tokens "$TOKENS" --teacher "$TEACHER" --student "hybrid=$RUNS/stage2-seed$SEED/model" \
  --passkey-lengths 256,512,1024,2048 --passkey-distances 65-96,96-128,128-256,256-512 --passkey-templates code \
  --passkey-examples 50 --decode-tokens 16 --tasks cloze,next-sentence ${REPORT_EXTRA:-} --out "$OUT/t2r-recall-seed$SEED.json"
