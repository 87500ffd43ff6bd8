#!/usr/bin/env bash
# CPU probe of GSA's MQAR learning speed (session 12): vocabulary 256, 8 pairs at 128 tokens only, d = 64, one head,
# short convolution, 32 sequences a step, 2500 steps, accuracy on 256 test sequences every 500 steps. One job per
# variant, one thread each (2 jobs ~13 min on 2 cores). Variants are extra overrides, e.g.
#   bash benchmarks/scripts/cpu_mqar_probe.sh base="" tau32="model.gate_logit_normalizer=32" bias="model.gate_bias=true"
# Accuracy rows: grep mqar_acc $OUT/<name>/metrics.jsonl
set -u
OUT=${OUT:-/tmp/mqar-probe}; mkdir -p "$OUT"
for spec in "$@"; do
  name=${spec%%=*}; extra=${spec#*=}
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 python -m gsa.train --config configs/mqar-gsa-d64.toml --output-dir "$OUT/$name" \
    data.mqar_vocab_size=256 'data.mqar_train_pairs=[8]' 'data.mqar_train_seq_lens=[128]' data.seq_len=128 \
    'data.mqar_eval_pairs=[8]' 'data.mqar_eval_seq_lens=[]' data.mqar_eval_examples=256 model.num_heads=1 train.micro_batch_size=32 \
    train.max_steps=2500 optim.warmup_steps=100 train.eval_every=500 train.checkpoint_every=0 train.progress=false \
    train.log_every=100 train.compile=false $extra > "$OUT/$name.log" 2>&1 &
done
wait
for spec in "$@"; do name=${spec%%=*}; echo "$name: $(grep -h mqar_acc "$OUT/$name/metrics.jsonl" | tr '\n' ' ')"; done
