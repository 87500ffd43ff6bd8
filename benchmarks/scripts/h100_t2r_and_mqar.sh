#!/usr/bin/env bash
# One device call (H100), all jobs side by side on the one GPU:
#   T2R (issue 5): teacher from the carried GGUF, recipe (b) = stage 1 + stage 2, recipe (a) = the paper's, GSA from
#   scratch, all on the same 14M-token subset with at most 730 steps x 8192 tokens; then scripts/t2r_report.py.
#   MQAR (issue 4): GSA / ABC / Transformer at d = 64 and 128, Zoology-style length mix, 470 s each.
# Needs .carry/t2r.tar.part-* (gguf/, tokens/tokens-sub14m/, wheels/ of .cache/t2r; see docs/convert.md).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
START=$SECONDS
cat .carry/t2r.tar.part-* > /tmp/t2r.tar && md5sum /tmp/t2r.tar | tee "$OUT/carry.md5"
mkdir -p .cache/t2r && tar xf /tmp/t2r.tar -C .cache/t2r && rm /tmp/t2r.tar
python -m pip install -q --no-index --no-deps --target /tmp/site .cache/t2r/wheels/*.whl > "$OUT/pip.log" 2>&1
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

mqar() {  # mqar <name> <config> <lr> [overrides...]
  local name=$1 cfg=$2 lr=$3; shift 3
  timeout 540 python -m gsa.train --config "$cfg" --output-dir "runs/mqar/$name" optim.lr=$lr optim.warmup_steps=500 \
    "data.mqar_train_pairs=[4, 8, 16, 32, 64]" "data.mqar_train_seq_lens=[64, 128, 256, 512, 512]" \
    "data.mqar_eval_pairs=[4, 8, 16, 32, 64]" data.mqar_eval_examples=1000 train.max_steps=20000 \
    train.eval_every=2000 train.checkpoint_every=0 train.progress=false train.log_every=200 train.time_limit_s=460 \
    "$@" > "$OUT/mqar-$name.log" 2>&1
  cp "runs/mqar/$name/metrics.jsonl" "$OUT/mqar-$name.metrics.jsonl" 2>/dev/null
}
mqar gsa-d64 configs/mqar-gsa-d64.toml 3e-3 &
mqar gsa-d128 configs/mqar-gsa-d128.toml 3e-3 &
mqar gsa-d128-lr1e-3 configs/mqar-gsa-d128.toml 1e-3 &
mqar abc-d64 configs/mqar-gsa-d64.toml 3e-3 'model.forget_gate="none"' &
mqar abc-d128 configs/mqar-gsa-d128.toml 3e-3 'model.forget_gate="none"' &
mqar llama-d64 configs/mqar-llama-d64.toml 1e-3 &
mqar llama-d128 configs/mqar-llama-d128.toml 1e-3 &

timeout 120 python scripts/prepare_t2r_data.py teacher --cache .cache/t2r > "$OUT/teacher.log" 2>&1
echo "teacher rc=$? at $((SECONDS - START)) s"; tail -3 "$OUT/teacher.log"
timeout 60 python -m gsa convert --from .cache/t2r/teacher --to runs/converted --num-slots 64 > "$OUT/convert.log" 2>&1
echo "convert rc=$?"
TOK='data.tokens=".cache/t2r/tokens/tokens-sub14m"'
COMMON=(train.progress=false train.checkpoint_every=0 train.eval_every=0 train.eval_sequences=256 train.log_every=20)
t2r() {  # t2r <name> <limit_s> <config> [overrides...]
  local name=$1 limit=$2 cfg=$3; shift 3
  timeout $((limit + 60)) python -m gsa.train --config "$cfg" --output-dir "runs/$name" "$TOK" "${COMMON[@]}" \
    train.time_limit_s=$limit "$@" > "$OUT/t2r-$name.log" 2>&1
  echo "t2r $name rc=$? at $((SECONDS - START)) s"
  cp "runs/$name/metrics.jsonl" "$OUT/t2r-$name.metrics.jsonl" 2>/dev/null
}
LEFT=$((400 - (SECONDS - START)))  # training ends by ~400 s; the report takes the rest
( t2r b-stage1 $((LEFT / 5)) configs/t2r-stage1.toml train.max_steps=120 optim.warmup_steps=20 \
  && t2r b-stage2 $((LEFT * 4 / 5 - 40)) configs/t2r-stage2.toml 'model.path="runs/b-stage1/model"' \
       train.max_steps=610 optim.warmup_steps=50 ) &
t2r a-paper $LEFT configs/t2r-paper.toml train.max_steps=730 optim.warmup_steps=100 &
t2r scratch $LEFT configs/t2r-paper.toml model.reinit=true train.max_steps=730 optim.warmup_steps=100 optim.lr=1e-3 &
wait %8 %9 %10
echo "training done at $((SECONDS - START)) s"
STUDENTS=(--student converted=runs/converted)
for n in b-stage2 a-paper scratch; do [ -f "runs/$n/model/config.json" ] && STUDENTS+=(--student "$n=runs/$n/model"); done
timeout $((575 - (SECONDS - START))) python scripts/t2r_report.py --tokens .cache/t2r/tokens/tokens-sub14m \
  --teacher .cache/t2r/teacher "${STUDENTS[@]}" --passkey-examples 50 --decode-tokens 64 --out "$OUT/t2r-report.json" > "$OUT/t2r-report.log" 2>&1
echo "report rc=$? at $((SECONDS - START)) s"; tail -9 "$OUT/t2r-report.log"
wait
for f in "$OUT"/mqar-*.log; do echo "== $f"; grep -E "MQAR accuracy|time limit|Error" "$f" | tail -2; done
