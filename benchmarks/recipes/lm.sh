#!/usr/bin/env bash
# Language-model quality at ~45M parameters (results page, "LM quality"): GSA (configs/gsa-30m.toml), the same-size
# Llama (configs/llama-30m.toml) and GSA's three ablations of the paper (ABC: no forget gate; a data-independent
# decay; no slot softmax), side by side on one GPU, same tokens and steps: 500 steps of 32 x 1024 tokens (16.4M),
# lr 1e-3, tied embeddings, then the held-out perplexity on 256 windows of 1024.
#   bash benchmarks/recipes/lm.sh
#   JOBS="gsa llama" bash benchmarks/recipes/lm.sh            # a subset
#   TOKENS= JOBS="gsa llama" EXTRA="train.max_steps=4 train.micro_batch_size=2 train.grad_accum=1 data.seq_len=64
#     train.eval_sequences=4" bash benchmarks/recipes/lm.sh   # a smoke run (CPU, the configs' bundled corpus)
# Data: TOKENS, a token cache with its tokenizer TOKENIZER (defaults: the one token cache under .cache/t2r/tokens,
# the T2R corpus, of which the results used a 14M-token subset; and the SmolLM2 tokenizer; both built by `python
# scripts/prepare_t2r_data.py all`; docs/convert.md); TOKENS= (empty) keeps the configs' own data. The five jobs
# shared one 80 GB GPU in the results' run (ABC needed a second call: RUNS keeps finished runs, JOBS picks the rest);
# LIMIT=s stops each job after s seconds of training (0: none).
# Writes lm.json (the table's rows) to $OUT (default benchmarks/results/<gpu>/); runs and logs under RUNS (runs/lm).
source "$(dirname "$0")/common.sh"
TOKENS=${TOKENS-$(token_cache)}; TOKENIZER=${TOKENIZER:-.cache/t2r/teacher}; RUNS=${RUNS:-runs/lm}
DATA=(); [ -n "$TOKENS" ] && DATA=("data.tokens=\"$TOKENS\"" "data.tokenizer=\"$TOKENIZER\"")
JOBS=${JOBS:-"gsa llama abc fixed-decay linear-read"}; LIMIT=${LIMIT:-0}; mkdir -p "$RUNS"
for j in $JOBS; do
  case $j in
    gsa) ARGS=(configs/gsa-30m.toml) ;;
    llama) ARGS=(configs/llama-30m.toml) ;;
    abc) ARGS=(configs/gsa-30m.toml 'model.forget_gate="none"') ;;
    fixed-decay) ARGS=(configs/gsa-30m.toml 'model.forget_gate="fixed"') ;;
    linear-read) ARGS=(configs/gsa-30m.toml 'model.slot_read="linear"') ;;
    *) echo "unknown job $j (gsa, llama, abc, fixed-decay, linear-read)"; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  $PY -m gsa.train --config "${ARGS[0]}" --output-dir "$RUNS/$j" "${ARGS[@]:1}" "${DATA[@]}" \
    model.tie_word_embeddings=true train.max_steps=500 train.eval_every=0 \
    train.checkpoint_every=0 train.progress=false train.log_every=20 train.time_limit_s="$LIMIT" ${EXTRA:-} \
    > "$RUNS/$j.log" 2>&1 &
done
wait
RESULTS=()
for j in gsa llama abc fixed-decay linear-read; do [ -f "$RUNS/$j/metrics.jsonl" ] && RESULTS+=("$j=$RUNS/$j"); done
$PY benchmarks/recipes/compare_runs.py --out "$OUT/lm.json" "${RESULTS[@]}"
