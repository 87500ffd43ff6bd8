#!/usr/bin/env bash
# Data-parallel training, 2 processes against 1 at the same global batch (results page, "Distributed"): torchrun with
# NPROC processes (NCCL on GPUs, gloo on a CPU), DDP and FSDP2, against 1 process with gradient accumulation.
#  1. the tests: tests/train/test_trainer.py -k "two_gpus or two_processes" (the 2-GPU one skips with fewer GPUs);
#  2. CONFIG (default configs/gsa-30m.toml, bf16) for STEPS steps of 32 sequences: 1 process (micro-batch 16 x 2
#     accumulation), the same with seed 1 (what noise is: another init), then NPROC processes x 16 with DDP and with
#     FSDP2; compare_runs.py prints each run's largest loss difference from the 1-process run.
#   bash benchmarks/recipes/distributed.sh                    # 2 GPUs, STEPS=300
#   STEPS=20 CONFIG=configs/tiny-cpu.toml EXTRA="train.micro_batch_size=4 train.log_every=2 train.eval_sequences=8" \
#     bash benchmarks/recipes/distributed.sh                  # CPU (gloo), ~2 minutes on 2 cores
# Writes tests.log, the runs' logs and distributed.json (the table's rows) to $OUT (default benchmarks/results/<gpu>/);
# runs under runs/dist (removed first).
source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-300}; CONFIG=${CONFIG:-configs/gsa-30m.toml}; NPROC=${NPROC:-2}; R=runs/dist; rm -rf $R
$PY -m pytest -q tests/train/test_trainer.py -k "two_gpus or two_processes" -rs > "$OUT/tests.log" 2>&1 || true
tail -3 "$OUT/tests.log"
# shellcheck disable=SC2206
COMMON=(train.max_steps=$STEPS train.micro_batch_size=16 train.eval_every=$STEPS train.checkpoint_every=0
  train.progress=false train.log_every=10 data.cache_dir=$R/data ${EXTRA:-})
# the tokenizer and token cache, built once, outside the compared runs
$PY -m gsa.train --config "$CONFIG" --output-dir $R/prep "${COMMON[@]}" train.max_steps=1 train.eval_every=0 \
  > "$OUT/prep.log" 2>&1 || { tail -20 "$OUT/prep.log"; exit 1; }
$PY -m gsa.train --config "$CONFIG" --output-dir $R/one "${COMMON[@]}" train.grad_accum=$NPROC > "$OUT/one.log" 2>&1
$PY -m gsa.train --config "$CONFIG" --output-dir $R/one-seed1 "${COMMON[@]}" train.grad_accum=$NPROC seed=1 \
  > "$OUT/one-seed1.log" 2>&1
for p in ddp fsdp; do
  torchrun --nproc_per_node=$NPROC -m gsa.train --config "$CONFIG" --output-dir $R/$p "${COMMON[@]}" \
    train.grad_accum=1 train.parallel=$p > "$OUT/$p.log" 2>&1 || tail -20 "$OUT/$p.log"
done
$PY benchmarks/recipes/compare_runs.py --out "$OUT/distributed.json" one=$R/one one-seed1=$R/one-seed1 ddp=$R/ddp \
  fsdp=$R/fsdp
