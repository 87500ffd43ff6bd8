#!/usr/bin/env bash
# One device call (H200), issue 4, session 20: MQAR with the compiled-gradient fix of session 19 (gsa/nn/norm.py),
# GSA vs ABC at equal steps, both widths, plus GSA variants at d = 128, all jobs side by side on the one GPU; the
# compiled-gradient GPU test and per-tensor gradient errors (GSA and ABC configs) run beside them.
#   NSTEPS=7000 LIMIT=400 bash benchmarks/scripts/h200_session20_mqar.sh
# J128 / J64: the jobs at each width (names as in h100_mqar2.sh, +KEY=VALUE adds overrides).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/machine.txt"
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
  | tee -a "$OUT/machine.txt"
J128=${J128:-"gsa-conv abc-conv gsa-conv+model.num_slots=32+model.gate_logit_normalizer=16 gsa-conv-bias gsa-conv+model.attn_scale=1.0"}
J64=${J64:-"gsa-conv abc-conv"}
( python -m pytest -q -p no:cacheprovider tests/models/test_compiled_grads.py 2>&1 | tail -3
  for set in "" 'model.forget_gate="none"'; do
    echo "== compiled gradients vs float64, config mqar-gsa-d128 $set"
    python benchmarks/scripts/gpu_compile_grads.py --cases "bf16 eager,bf16 compile" --set $set --out "$OUT/cg" 2>&1 \
      | grep "^|"
  done ) > "$OUT/checks.log" 2>&1 &
OUT=$OUT/d128 WIDTH=128 NSTEPS=${NSTEPS:-7000} LIMIT=${LIMIT:-400} JOBS="$J128" \
  EXTRA="train.eval_every=2000 ${EXTRA:-}" bash benchmarks/scripts/h100_mqar2.sh > "$OUT/mqar-d128.log" 2>&1 &
OUT=$OUT/d64 WIDTH=64 NSTEPS=${NSTEPS:-7000} LIMIT=${LIMIT:-400} JOBS="$J64" \
  EXTRA="train.eval_every=2000 ${EXTRA:-}" bash benchmarks/scripts/h100_mqar2.sh > "$OUT/mqar-d64.log" 2>&1 &
wait
cat "$OUT/checks.log" "$OUT"/mqar-d*.log
for f in "$OUT"/d*/m/mqar-*.metrics.jsonl; do
  echo "== $f"; grep mqar_acc "$f" | tail -4 | cut -c1-200
done
