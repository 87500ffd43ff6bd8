#!/usr/bin/env bash
# One device call (H100), issue 5: the teacher from the carried GGUF, then side by side on the one GPU recipe (b)
# (stage 1 then stage 2), recipe (a) (the paper's) and GSA from scratch, each at most 730 steps x 8192 tokens of the
# same 14M-token subset, then scripts/t2r_report.py (teacher, sliding window + sinks, the converted model before
# finetuning, each recipe). Outputs in $OUT/t2r.tar.
# Needs the parts of the tar of gguf/, tokens/tokens-sub14m/, wheels/ of .cache/t2r (split in three since session 16:
# one call carries at most 64 MiB with the tree) kept in /tmp/keep by earlier calls (h100_decode.sh) or carried now.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/t; mkdir -p "$R"
START=$SECONDS
finish() { tar cf "$OUT/t2r.tar" -C "$OUT" t; }
trap finish EXIT
for part in aa ab ac; do [ -f .carry/t2r.tar.part-$part ] && cat .carry/t2r.tar.part-$part || cat /tmp/keep/t2r.tar.part-$part
done > /tmp/t2r.tar || exit 1
md5sum /tmp/t2r.tar | tee "$R/carry.md5"
grep -q a3c14faa71c4163651792172a5acc007 "$R/carry.md5" || { echo "carried tar is damaged"; exit 1; }
mkdir -p .cache/t2r && tar xf /tmp/t2r.tar -C .cache/t2r && rm /tmp/t2r.tar
python -m pip install -q --no-index --no-deps --target /tmp/site .cache/t2r/wheels/*.whl > "$R/pip.log" 2>&1
export PYTHONPATH=$PWD:/tmp/site
timeout 120 python scripts/prepare_t2r_data.py teacher --cache .cache/t2r > "$R/teacher.log" 2>&1
echo "teacher rc=$? at $((SECONDS - START)) s"; tail -3 "$R/teacher.log"
timeout 60 python -m gsa convert --from .cache/t2r/teacher --to runs/converted --num-slots 64 > "$R/convert.log" 2>&1
echo "convert rc=$?"
TOK='data.tokens=".cache/t2r/tokens/tokens-sub14m"'
COMMON=(train.progress=false train.checkpoint_every=0 train.eval_every=0 train.eval_sequences=256 train.log_every=20)
t2r() {  # t2r <name> <limit_s> <config> [overrides...]
  local name=$1 limit=$2 cfg=$3; shift 3
  timeout $((limit + 60)) python -m gsa.train --config "$cfg" --output-dir "runs/$name" "$TOK" "${COMMON[@]}" \
    train.time_limit_s=$limit "$@" > "$R/t2r-$name.log" 2>&1
  echo "t2r $name rc=$? at $((SECONDS - START)) s"; grep -E "held-out|time limit|Error" "$R/t2r-$name.log" | tail -2
  cp "runs/$name/metrics.jsonl" "$R/t2r-$name.metrics.jsonl" 2>/dev/null
}
LEFT=$((430 - (SECONDS - START)))  # training ends by ~430 s; the report takes the rest
( t2r b-stage1 $((LEFT / 6)) configs/t2r-stage1.toml train.max_steps=120 optim.warmup_steps=20 \
  && t2r b-stage2 $((LEFT * 5 / 6 - 45)) configs/t2r-stage2.toml 'model.path="runs/b-stage1/model"' \
       train.max_steps=610 optim.warmup_steps=50 ) &
t2r a-paper $LEFT configs/t2r-paper.toml train.max_steps=730 optim.warmup_steps=100 &
t2r scratch $LEFT configs/t2r-paper.toml model.reinit=true train.max_steps=730 optim.warmup_steps=100 optim.lr=1e-3 &
wait
echo "training done at $((SECONDS - START)) s"
STUDENTS=(--student converted=runs/converted)
for n in b-stage2 a-paper scratch; do [ -f "runs/$n/model/config.json" ] && STUDENTS+=(--student "$n=runs/$n/model"); done
timeout $((585 - (SECONDS - START))) python scripts/t2r_report.py --tokens .cache/t2r/tokens/tokens-sub14m \
  --teacher .cache/t2r/teacher "${STUDENTS[@]}" --passkey-examples 50 --decode-tokens 64 --out "$R/t2r-report.json" \
  > "$R/t2r-report.log" 2>&1
echo "report rc=$? at $((SECONDS - START)) s"; tail -9 "$R/t2r-report.log"
