#!/usr/bin/env bash
# One device call (H100), issue 4: the ~30M-layer-parameter LMs side by side on the one GPU, same tokens and steps:
# GSA, the Llama Transformer, and the GSA ablations ABC (no forget gate), data-independent decay, no slot softmax.
# Data: the 14M-token Debian subset of the T2R corpus with the SmolLM2 tokenizer, carried as .carry/lm (32 MB):
#   mkdir -p .carry/lm/tokenizer && cp -r .cache/t2r/tokens/tokens-sub14m .carry/lm/ \
#     && cp .cache/t2r/teacher/tokenizer.json .cache/t2r/teacher/tokenizer_config.json .carry/lm/tokenizer/
# 500 steps x 32K tokens (16.4M tokens). Outputs in $OUT/lm.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/lm; mkdir -p "$R"
lm() {  # lm <name> <config> [overrides...]
  local name=$1 cfg=$2; shift 2
  timeout 560 python -m gsa.train --config "$cfg" --output-dir "runs/lm/$name" 'data.tokens=".carry/lm/tokens-sub14m"' \
    'data.tokenizer=".carry/lm/tokenizer"' model.tie_word_embeddings=true train.max_steps=500 train.eval_every=0 \
    train.checkpoint_every=0 train.progress=false train.log_every=20 train.time_limit_s=480 "$@" > "$R/$name.log" 2>&1
  cp "runs/lm/$name/metrics.jsonl" "$R/$name.metrics.jsonl" 2>/dev/null
}
JOBS=${JOBS:-"gsa llama abc fixed-decay linear-read"}  # a subset reruns those jobs alone (e.g. JOBS="abc linear-read")
for j in $JOBS; do
  case $j in
    gsa) lm gsa configs/gsa-30m.toml & ;;
    llama) lm llama configs/llama-30m.toml & ;;
    abc) lm abc configs/gsa-30m.toml 'model.forget_gate="none"' & ;;
    fixed-decay) lm fixed-decay configs/gsa-30m.toml 'model.forget_gate="fixed"' & ;;
    linear-read) lm linear-read configs/gsa-30m.toml 'model.slot_read="linear"' & ;;
  esac
done
wait
for f in "$R"/*.log; do echo "== $f"; grep -E "parameters|held-out|time limit|Error" "$f" | tail -3; done
tar cf "$OUT/lm.tar" -C "$OUT" lm
