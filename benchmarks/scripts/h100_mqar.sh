#!/usr/bin/env bash
# One device call (H100), issue 4: MQAR at d = 128, GSA vs ABC vs the Transformer side by side on the one GPU, each
# with the same time budget: Zoology-style length mix (4..64 pairs at 64..512 tokens), 256 sequences a step,
# lr 1e-3, tested at 512 tokens with 4..64 pairs (1000 examples each). Outputs in $OUT/mqar.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/m; mkdir -p "$R"
LIMIT=${LIMIT:-400}
mqar() {  # mqar <name> <config> [overrides...]
  local name=$1 cfg=$2; shift 2
  timeout $((LIMIT + 90)) python -m gsa.train --config "$cfg" --output-dir "runs/mqar/$name" optim.lr=1e-3 \
    optim.warmup_steps=300 train.micro_batch_size=256 \
    "data.mqar_train_pairs=[4, 8, 16, 32, 64]" "data.mqar_train_seq_lens=[64, 128, 256, 512, 512]" \
    "data.mqar_eval_pairs=[4, 8, 16, 32, 64]" "data.mqar_eval_seq_lens=[]" data.mqar_eval_examples=1000 train.max_steps=8000 \
    train.eval_every=1000 train.checkpoint_every=0 train.progress=false train.log_every=100 train.time_limit_s=$LIMIT \
    "$@" > "$R/mqar-$name.log" 2>&1
  cp "runs/mqar/$name/metrics.jsonl" "$R/mqar-$name.metrics.jsonl" 2>/dev/null
}
mqar gsa-d128 configs/mqar-gsa-d128.toml &
mqar abc-d128 configs/mqar-gsa-d128.toml 'model.forget_gate="none"' &
mqar llama-d128 configs/mqar-llama-d128.toml &
wait
for f in "$R"/mqar-*.log; do echo "== $f"; grep -E "MQAR accuracy|time limit|Error" "$f" | tail -2; done
tar cf "$OUT/mqar.tar" -C "$OUT" m
