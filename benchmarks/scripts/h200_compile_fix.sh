#!/usr/bin/env bash
# One device call (H200), issue 4, session 19: the compiled-training gradient fix (gsa/nn/norm.py: the RMSNorm
# runs as plain ops inside a torch.compile trace; torch 2.11's Dynamo mis-traced its autograd.Function), then MQAR
# with the fixed compiled path: GSA vs ABC at d = 128 and d = 64, all four side by side on the one GPU, equal steps.
#   NSTEPS=8000 LIMIT=360 bash benchmarks/scripts/h200_compile_fix.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python -m pytest -q -p no:cacheprovider tests/models/test_compiled_grads.py 2>&1 | tail -3 | tee "$OUT/tests.log"
grep -q "3 passed" "$OUT/tests.log" || { echo "compiled-gradient tests did not pass: no MQAR runs"; exit 1; }
python benchmarks/scripts/gpu_compile_grads.py --cases "fp32 eager,bf16 eager,fp32 compile,bf16 compile" \
  --out "$OUT" 2>&1 | grep "^|" | tee "$OUT/compile_grads.md"
for w in 128 64; do
  OUT=$OUT/d$w WIDTH=$w NSTEPS=${NSTEPS:-8000} LIMIT=${LIMIT:-360} JOBS="gsa-conv abc-conv" \
    EXTRA="train.eval_every=2000" bash benchmarks/scripts/h100_mqar2.sh > "$OUT/mqar-d$w.log" 2>&1 &
done
wait
cat "$OUT"/mqar-d*.log
for f in "$OUT"/d*/m/mqar-*.metrics.jsonl; do
  echo "== $f"; grep mqar_acc "$f" | tail -5 | cut -c1-160
done
