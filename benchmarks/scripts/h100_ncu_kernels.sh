#!/usr/bin/env bash
# Device call (H100), prepared 2026-11-24 (session 9) and not yet run, issue 3: hardware counters of each GSA
# kernel in one forward+backward of the 1.3b shape (bf16), to decide the next kernel change from facts. Session 9
# settled that register spills are not the bound (8 warps: spill-free and 1.3x slower). The two live suspects:
# redundant reads of the float32 chunk states (each of a chunk's four sub-block programs reads the whole
# [K, M] state: ~0.5 GB a kernel_a call) and the diagonal sub-blocks' [16, 16, 64] pairwise decays.
# DRAM bytes, L2 hit rate, achieved occupancy and the SM / memory throughput per kernel answer which.
# Before the counters, it times CHUNK_STATES = "input" (bf16 chunk-start states) against the float32 default.
# Outputs in $OUT/ncu.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/ncu; mkdir -p "$R"
cat > /tmp/ncu_driver.py <<'PY'
import torch
from gsa.ops.triton import chunk_gsa

B, T, HQ, H, K, V, M = 8, 2048, 4, 4, 512, 512, 64
dev, dt = "cuda", torch.bfloat16
q = torch.randn(B, T, HQ, K, device=dev, dtype=dt, requires_grad=True)
k = torch.randn(B, T, H, K, device=dev, dtype=dt, requires_grad=True)
v = torch.randn(B, T, H, V, device=dev, dtype=dt, requires_grad=True)
f = torch.randn(B, T, H, M, device=dev)
g = (torch.nn.functional.logsigmoid(f) / 8).requires_grad_()
s = (-torch.expm1(g.detach())).to(dt).requires_grad_()
do = torch.randn(B, T, HQ, V, device=dev, dtype=dt)


def step():
    o, _ = chunk_gsa(q, k, v, s, g, K**-0.5, None, False, None)
    o.backward(do)


for _ in range(3):  # compile and warm up outside the profiled range
    step()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart()
step()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
PY
# first, CHUNK_STATES float32 (the default) vs "input" (bf16 chunk-start states, as fla-core): timed in one call
# STATES="" skips this comparison (the counters alone)
for st in ${STATES-float32 input}; do
  timeout 120 python -c "import gsa.ops.triton.utils as u; u.CHUNK_STATES = '$st'
from gsa.bench.ops import main; main(['--shapes', '1.3b', '--profile', '--decode-batches', '', '--out', '$R/ops-states-$st.json'])" \
    > "$R/ops-states-$st.log" 2>&1
  echo "states $st rc=$?"; grep -E "^1.3b" "$R/ops-states-$st.log"
done
which ncu || { echo "no ncu on this machine"; exit 1; }
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,\
sm__warps_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,\
launch__occupancy_limit_registers,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,\
smsp__inst_executed_pipe_xu.sum
timeout 560 ncu --profile-from-start off --clock-control none --kernel-name regex:chunk_gsa --metrics "$METRICS" \
  --csv --page raw python /tmp/ncu_driver.py > "$R/ncu.csv" 2> "$R/ncu.err"
echo "ncu rc=$?"; tail -3 "$R/ncu.err"
python - "$R/ncu.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
rows = [r for r in rows if r.get("Kernel Name", "").startswith("chunk_gsa")]
keys = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_sector_hit_rate.pct",
        "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
        "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
        "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"]
print("kernel | " + " | ".join(k.split(".")[0].split("__")[-1] for k in keys))
for r in rows:
    print(r["Kernel Name"][:28], " | ".join(r.get(k, "?") for k in keys))
PY
tar cf "$OUT/ncu.tar" -C "$OUT" ncu
