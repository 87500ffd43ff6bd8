#!/usr/bin/env bash
# Next device call (H100), prepared 2026-11-24 and not yet run: the two open training comparisons of issue 4.
#   1. MQAR d = 128, GSA with vs without its short convolution (the configs' default is without), same recipe and
#      time as benchmarks/scripts/h100_mqar.sh;
#   2. the ABC ablation of the ~45M LM (it ran out of memory when five jobs shared the GPU), same settings as
#      benchmarks/scripts/h100_lm30m.sh (carry .carry/lm, made as that script says).
# Outputs in $OUT/next-training.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/nt; mkdir -p "$R"
LIMIT=${LIMIT:-420}
mqar() {
  local name=$1; shift
  timeout $((LIMIT + 90)) python -m gsa.train --config configs/mqar-gsa-d128.toml --output-dir "runs/mqar/$name" \
    data.mqar_eval_examples=1000 train.eval_every=1000 train.checkpoint_every=0 train.progress=false \
    train.log_every=100 train.time_limit_s=$LIMIT "$@" > "$R/mqar-$name.log" 2>&1
  cp "runs/mqar/$name/metrics.jsonl" "$R/mqar-$name.metrics.jsonl" 2>/dev/null
}
mqar gsa-d128-conv model.use_short_conv=true &
mqar gsa-d128-noconv model.use_short_conv=false &
timeout 560 python -m gsa.train --config configs/gsa-30m.toml --output-dir runs/lm/abc 'data.tokens=".carry/lm/tokens-sub14m"' \
  'data.tokenizer=".carry/lm/tokenizer"' model.tie_word_embeddings=true 'model.forget_gate="none"' train.max_steps=500 \
  train.eval_every=0 train.checkpoint_every=0 train.progress=false train.log_every=20 train.time_limit_s=480 \
  > "$R/lm-abc.log" 2>&1 &
wait
cp runs/lm/abc/metrics.jsonl "$R/lm-abc.metrics.jsonl" 2>/dev/null
for f in "$R"/*.log; do echo "== $f"; grep -E "MQAR accuracy|held-out|time limit|Error" "$f" | tail -2; done
tar cf "$OUT/next-training.tar" -C "$OUT" nt
