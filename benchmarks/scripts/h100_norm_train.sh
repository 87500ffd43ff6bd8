#!/usr/bin/env bash
# Device call (H100), session 14: (1) the op after dg went chunk-parallel and the narrow state kernels' launch
# options, against the tree before the session (.carry/old, a755137), side by side, four shapes; (2) `gsa bench
# train` Llama vs GSA with the Triton RMSNorm (default on CUDA) and GSA with the torch norm node (gsa.nn.backend.KERNELS
# = "torch"), 2K and 16K; (3) the GPU-marked tests of ops / nn / models and the norm tests on the GPU.
# Outputs in $OUT/s14c.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/s14c; mkdir -p "$R"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head,1.3b-long "$R" 170
grep -A13 "^per-kernel" "$R/ops-new.log" | head -14
PYTHONPATH=$PWD timeout 150 python -m gsa.bench.train --variants llama,gsa --seq-lens 2048,16384 \
  --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A6 "^training:" "$R/train.log"
PYTHONPATH=$PWD timeout 100 python -c "import gsa.nn.backend as b; b.KERNELS = 'torch'
from gsa.bench.train import main; main(['--variants', 'gsa', '--seq-lens', '2048,16384', '--out', '$R/train-torchnorm.json'])" \
  > "$R/train-torchnorm.log" 2>&1
echo "train torch-norm rc=$?"; grep -A4 "^training:" "$R/train-torchnorm.log"
PYTHONPATH=$PWD timeout 120 python -m pytest -q -p no:cacheprovider tests/ops/test_norm_triton.py > "$R/norm-tests.log" 2>&1
echo "norm tests rc=$?"; tail -1 "$R/norm-tests.log"
PYTHONPATH=$PWD timeout $((585 - SECONDS)) python -m pytest -q -n 8 -p no:cacheprovider -m gpu tests/ops tests/models \
  tests/train > "$R/gpu-tests.log" 2>&1
echo "gpu tests rc=$?"; tail -3 "$R/gpu-tests.log"
tar cf "$OUT/s14c.tar" -C "$OUT" s14c
