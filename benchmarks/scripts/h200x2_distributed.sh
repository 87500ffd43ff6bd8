#!/usr/bin/env bash
# One device call on nvidia-h200-x2 (issue 4's distributed evidence; ask `status` first: the kind may be withheld):
# torchrun with 2 processes on 2 GPUs (NCCL), DDP and FSDP2, against 1 process at the same global batch.
#  1. the GPU tests: tests/train/test_trainer.py::test_two_gpus_with_nccl_match_one (float32, 4 steps, 1e-3) and the
#     gloo CPU tests beside them;
#  2. gsa-30m on the bundled corpus, bf16, STEPS steps of 32 sequences x 1024 tokens: 1 GPU (micro-batch 16 x 2
#     accumulation), the same with seed 1 (what "noise" is: another init), then 2 GPUs x 16 with DDP and with FSDP2.
#     The table (benchmarks/scripts/compare_runs.py) gives each run's largest loss difference from the 1-GPU run.
#   bash benchmarks/scripts/h200x2_distributed.sh          (STEPS=300 by default; results in $OUT)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; R=runs/dist; rm -rf $R
STEPS=${STEPS:-300}; CONFIG=${CONFIG:-configs/gsa-30m.toml}  # CONFIG / EXTRA: a CPU smoke test (tiny-cpu.toml)
nvidia-smi -L > "$OUT/machine.txt"
python -m pytest -q tests/train/test_trainer.py -k "two_gpus or two_processes" -rs > "$OUT/tests.log" 2>&1
tail -3 "$OUT/tests.log"
COMMON="train.max_steps=$STEPS train.micro_batch_size=16 train.eval_every=$STEPS train.checkpoint_every=0
  train.progress=false train.log_every=10 data.cache_dir=$R/data ${EXTRA:-}"
# build the tokenizer and token cache once, outside the compared runs
python -m gsa.train --config $CONFIG --output-dir $R/prep $COMMON train.max_steps=1 train.eval_every=0 \
  > "$OUT/prep.log" 2>&1 || { tail -20 "$OUT/prep.log"; exit 1; }
python -m gsa.train --config $CONFIG --output-dir $R/one $COMMON train.grad_accum=2 > "$OUT/one.log" 2>&1
python -m gsa.train --config $CONFIG --output-dir $R/one-seed1 $COMMON train.grad_accum=2 seed=1 \
  > "$OUT/one-seed1.log" 2>&1
for p in ddp fsdp; do
  torchrun --nproc_per_node=2 -m gsa.train --config $CONFIG --output-dir $R/$p $COMMON \
    train.grad_accum=1 train.parallel=$p > "$OUT/$p.log" 2>&1 || tail -20 "$OUT/$p.log"
done
python benchmarks/scripts/compare_runs.py $R/one $R/one-seed1 $R/ddp $R/fsdp | tee "$OUT/table.md"
mkdir -p "$OUT/m"; for r in one one-seed1 ddp fsdp; do cp $R/$r/metrics.jsonl "$OUT/m/$r.metrics.jsonl" 2>/dev/null; done
tar cf "$OUT/metrics.tar" -C "$OUT" m && rm -rf "$OUT/m"
