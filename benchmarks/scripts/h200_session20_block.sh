#!/usr/bin/env bash
# One device call (H200), issue 4, session 20: MQAR with Zoology's block structure (model.intermediate_size=0: no
# MLP, the sequence mixer alone; 2 or 4 layers), GSA vs ABC vs the Transformer at both widths and GSA variants,
# equal steps, all jobs side by side on the one GPU (the screen before it: ABC mixer-only 4 layers reached 0.805 at
# 64 pairs in 5,000 steps, GSA 0.0085). Everything comes back as one tar of metrics files plus the two logs.
#   NSTEPS=5000 LIMIT=380 bash benchmarks/scripts/h200_session20_block.sh
# J128 / J64: the jobs at each width (empty: none at that width), e.g. GSA alone for a long schedule, in our format
# and Zoology's:
#   NSTEPS=20000 LIMIT=480 J64="" J128="gsa-conv+model.intermediate_size=0+model.num_hidden_layers=4
#     gsa-conv+model.intermediate_size=0+model.num_hidden_layers=4+data.mqar_query_values=false+data.mqar_random_fill=true" \
#     bash benchmarks/scripts/h200_session20_block.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MO="+model.intermediate_size=0"
J128=${J128-"gsa-conv$MO+model.num_hidden_layers=4+model.num_slots=32+model.gate_logit_normalizer=16
  gsa-conv-ub4$MO+model.num_hidden_layers=4 gsa-conv$MO abc-conv$MO llama$MO+model.num_hidden_layers=4"}
J64=${J64-"gsa-conv$MO+model.num_hidden_layers=4 abc-conv$MO+model.num_hidden_layers=4 llama$MO+model.num_hidden_layers=4"}
for w in 128 64; do
  J=J$w
  [ -n "$(echo ${!J})" ] || continue  # J64="" runs d = 128 only
  OUT=$OUT/d$w WIDTH=$w NSTEPS=${NSTEPS:-5000} LIMIT=${LIMIT:-380} JOBS="$(echo ${!J})" \
    EXTRA="train.eval_every=2500 ${EXTRA:-}" bash benchmarks/scripts/h100_mqar2.sh > "$OUT/block-d$w.log" 2>&1 &
done
wait
cat "$OUT"/block-d*.log 2>/dev/null
mkdir -p "$OUT/flat"
for f in "$OUT"/d*/m/*.metrics.jsonl; do cp "$f" "$OUT/flat/$(basename "$f" | tr '+=' '__')"; done
tar cf "$OUT/block.tar" -C "$OUT/flat" . && rm -rf "$OUT"/d128 "$OUT"/d64 "$OUT/flat"
