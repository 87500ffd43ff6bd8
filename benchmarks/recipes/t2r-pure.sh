#!/usr/bin/env bash
# One rung of the pure GSA student's ablation ladder (docs/convert.md, "Pure student: ablation ladder") at a token
# budget: SmolLM2-135M-Instruct converted into plain GSA (no window), trained in stages, then scripts/t2r_report.py
# (held-out perplexity and recovery against the teacher and the sliding-window baseline, passkey retrieval, decode
# speed). Rungs (ABLATION), each adding one ingredient to the one before:
#   base  configs/t2r-stage1.toml (f_proj on attention outputs) -> t2r-stage2.toml (KL, full): today's pure student
#   fmap  + stage 0: learned q/k feature maps fitted to the teacher's attention weights (configs/t2r-pure-stage0.toml
#         without its gate init), then t2r-pure-stage1.toml (f_proj + maps) -> t2r-pure-stage2.toml
#   span  + forget-gate biases from the teacher's attention spans (t2r-pure-stage0.toml as it is)
#   m128  + 128 slots a head instead of 64
#   lora  m128 with stage 2 as LoRA (t2r-pure-stage2-lora.toml: rank 8 on q/k/v/o, f_proj and maps in full)
# and, beside the ladder, students that keep exact softmax attention over the first 4 tokens (the attention sinks)
# and each token's own key, a constant state of 5 keys and values a head beside the slots (docs/log.md, "T2R": the
# pure student's residual stream blows up at the sink token's scale):
#   sinks       span, converted with window_size=1 and num_sink_tokens=4; stage 1 also trains memory_scale (each
#               head's share of the slots, zero at the conversion)
#   sinks-qkvo  sinks with stage 1 also training q/k/v/o_proj
#   ABLATION=span TOKENS_BUDGET=15M bash benchmarks/recipes/t2r-pure.sh
#   S2_BATCH=64 S2_LR=2e-3 ABLATION=span TOKENS_BUDGET=50M bash benchmarks/recipes/t2r-pure.sh  # recovery 0.936
# TOKENS_BUDGET (5M, 15M, 50M or a number of tokens; default 15M) is split over the stages, base: 20% stage 1, 80%
# stage 2; the others: 10% stage 0, 10% stage 1, 80% stage 2 (STAGE_SHARES="10 40 50" sets another split, and the
# run's name and report then carry it: <rung>-<budget>-s10-40-50-seed<seed>); each stage's max_steps = its share /
# (micro batch x grad_accum x seq_len of its config and EXTRA), its warmup a tenth of that at most. Needs the teacher
# and a token cache (TEACHER, TOKENS; as benchmarks/recipes/t2r.sh; the 22.7M-token cache is seen twice at 50M) and,
# for lora, peft (pip install -e '.[lora]'). S2_LR: stage 2's peak learning rate instead of its config's (1e-3; the
# run's name then carries it: <rung>-<budget>-lr<S2_LR>-seed<seed>). S2_BATCH: stage 2's micro-batch size instead of
# its config's (16; its steps then shrink to keep the budget, and the name carries -b<S2_BATCH> after the rate: the
# eager step at 16 x 512 is host-bound, 64 x 512 ran 3x the tokens/s, BENCHMARKS.md, "T2R"). SEED (default 0); EXTRA:
# overrides for every stage; REPORT_EXTRA: report options (the report includes the zero-shot cloze / next-sentence
# tasks). Writes t2r-pure-<name>.json (the report; under "recipe" the stages' shares, steps, resolved configs and
# logged metrics; under "student" the final checkpoint's path and its weight files' SHA-256) to $OUT (default
# benchmarks/results/<gpu>/); runs and logs under RUNS (default runs/t2r-pure).
source "$(dirname "$0")/common.sh"
ABLATION=${ABLATION:-span}; TOKENS_BUDGET=${TOKENS_BUDGET:-15M}; RUNS=${RUNS:-runs/t2r-pure}; SEED=${SEED:-0}
if [[ ! $TOKENS_BUDGET =~ ^[1-9][0-9]*M?$ ]]; then  # positive, no leading 0 (bash would read it as octal)
  echo "TOKENS_BUDGET must be like 5M, 15M, 50M or a number of tokens, got '$TOKENS_BUDGET'" >&2; exit 2
fi
BUDGET=${TOKENS_BUDGET%M}
if [ "$BUDGET" != "$TOKENS_BUDGET" ]; then BUDGET=$(( BUDGET * 1000000 )); fi
# each stage: its config, then that stage's overrides
S0=(configs/t2r-pure-stage0.toml); S1=(configs/t2r-pure-stage1.toml); S2=configs/t2r-pure-stage2.toml; SHARES=(10 10 80)
SINKS=(model.window_size=1 model.num_sink_tokens=4); MAPS='"f_proj", "q_map", "k_map", "memory_scale"'
case "$ABLATION" in
  base) S0=(); S1=(configs/t2r-stage1.toml); S2=configs/t2r-stage2.toml; SHARES=(0 20 80) ;;
  fmap) S0+=('distill.gate_init=""' model.gate_bias=false) ;;
  span) ;;
  m128) S0+=(model.num_slots=128) ;;
  lora) S0+=(model.num_slots=128); S2=configs/t2r-pure-stage2-lora.toml ;;
  sinks) S0+=("${SINKS[@]}"); S1+=("distill.train_params=[$MAPS]") ;;
  sinks-qkvo) S0+=("${SINKS[@]}"); S1+=("distill.train_params=[$MAPS, \"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\"]") ;;
  *) echo "ABLATION must be one of base, fmap, span, m128, lora, sinks, sinks-qkvo; got '$ABLATION'" >&2; exit 2 ;;
esac
if [ -n "${STAGE_SHARES:-}" ]; then  # the budget's split over stages 0, 1, 2 in percent, instead of the rung's
  read -r -a SHARES <<< "$STAGE_SHARES"
  share='(0|[1-9][0-9]{0,2})'  # no leading 0: bash arithmetic would read it as octal
  # three shares summing to 100, stages 1 and 2 above 0, stage 0 above 0 exactly when the rung has a stage 0
  if [[ ! "${SHARES[*]}" =~ ^$share\ $share\ $share$ ]] || (( SHARES[0] + SHARES[1] + SHARES[2] != 100
      || SHARES[1] == 0 || SHARES[2] == 0 || (${#S0[@]} > 0) != (SHARES[0] > 0) )); then
    echo "STAGE_SHARES must be three percentages of stages 0, 1 and 2 summing to 100, stages 1 and 2 above 0, stage" \
      "0 above 0 exactly when the rung has one (base has none); got '$STAGE_SHARES'" >&2; exit 2
  fi
fi
if [ -n "${S2_BATCH:-}" ] && [[ ! $S2_BATCH =~ ^[1-9][0-9]*$ ]]; then
  echo "S2_BATCH must be a positive whole number of sequences such as 64, got '$S2_BATCH'" >&2; exit 2
fi
if [ -n "${S2_LR:-}" ] && [[ ! $S2_LR =~ ^([1-9][0-9]*(\.[0-9]+)?|0?\.[0-9]*[1-9][0-9]*)(e-?[0-9]+)?$ ]]; then
  echo "S2_LR must be a positive number such as 3e-4 or 0.0003, got '$S2_LR'" >&2; exit 2
fi
TEACHER=$(teacher_dir "${TEACHER:-}"); TOKENS=$(token_cache "${TOKENS:-}")
NAME=$ABLATION-$TOKENS_BUDGET${STAGE_SHARES:+-s${SHARES[0]}-${SHARES[1]}-${SHARES[2]}}
NAME=$NAME${S2_LR:+-lr$S2_LR}${S2_BATCH:+-b$S2_BATCH}-seed$SEED
DIR=$RUNS/$NAME; mkdir -p "$DIR"
COMMON=("data.tokens=\"$TOKENS\"" "data.tokenizer=\"$TEACHER\"" "distill.teacher=\"$TEACHER\"" seed="$SEED" train.progress=false
  train.checkpoint_every=0 train.eval_every=0 train.eval_sequences=64 train.log_every=20 ${EXTRA:-})

steps() {  # steps CONFIG SHARE_PERCENT [overrides] -> "max_steps warmup_steps" for that share of the budget (EXTRA
  # and the stage's overrides applied)
  # shellcheck disable=SC2086
  $PY - "$1" "$2" "$BUDGET" ${EXTRA:-} "${@:3}" <<'PY'
import sys
from gsa.train import load_config
cfg = load_config(sys.argv[1], sys.argv[4:])
per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.data.seq_len
steps = max(1, int(sys.argv[3]) * int(sys.argv[2]) // 100 // per_step)
print(steps, max(1, min(cfg.optim.warmup_steps, steps // 10)))
PY
}

run_stage() {  # run_stage N CONFIG SHARE MODEL_OVERRIDE [overrides...]
  local n=$1 config=$2 share=$3 model=$4; shift 4
  read -r max warm < <(steps "$config" "$share" "$@")
  echo "stage $n: $config, $max steps (warmup $warm)"
  STEPS[$n]=$max
  $PY -m gsa.train --config "$config" --output-dir "$DIR/stage$n" "${COMMON[@]}" "$model" \
    train.max_steps="$max" optim.warmup_steps="$warm" "$@" > "$DIR/stage$n.log" 2>&1
}

STEPS=(0 0 0)
PREV="model.teacher=\"$TEACHER\""
if [ ${#S0[@]} -gt 0 ]; then
  run_stage 0 "${S0[0]}" "${SHARES[0]}" "$PREV" "${S0[@]:1}"
  PREV="model.path=\"$DIR/stage0/model\""
fi
run_stage 1 "${S1[0]}" "${SHARES[1]}" "$PREV" "${S1[@]:1}"
run_stage 2 "$S2" "${SHARES[2]}" "model.path=\"$DIR/stage1/model\"" ${S2_LR:+optim.lr=$S2_LR} \
  ${S2_BATCH:+train.micro_batch_size=$S2_BATCH}
$PY scripts/t2r_report.py --tokens "$TOKENS" --teacher "$TEACHER" --student "$ABLATION=$DIR/stage2/model" \
  --passkey-lengths 512,1024,2048 --decode-tokens 16 --tasks cloze,next-sentence ${REPORT_EXTRA:-} \
  --out "$OUT/t2r-pure-$NAME.json"
# the recipe's own facts beside the report's (scripts/t2r_report.py writes the measurements): the stages' shares and
# steps, each stage's resolved config and logged metrics (loss curves), and the final student's weight files' SHA-256
# (the checkpoint itself stays under RUNS, outside git)
$PY - "$OUT/t2r-pure-$NAME.json" "$DIR" "$ABLATION" "$BUDGET" "${SHARES[*]}" "${STEPS[@]}" <<'PY'
import json, sys
from pathlib import Path
from gsa.models.loading import WEIGHT_SUFFIXES, file_sha256
path, run, ablation, budget, shares, *steps = sys.argv[1:]
run = Path(run)
report = json.load(open(path))
stages = [d for d in (run / f"stage{n}" for n in range(3)) if (d / "config.json").is_file()]
report["recipe"] = {"ablation": ablation, "tokens_budget": int(budget),
                    "stage_shares": [int(s) for s in shares.split()], "stage_steps": [int(s) for s in steps],
                    "stage_configs": {d.name: json.loads((d / "config.json").read_text()) for d in stages},
                    "stage_metrics": {d.name: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()
                                               if x.strip()] for d in stages if (d / "metrics.jsonl").is_file()}}
model = run / "stage2" / "model"
report["student"] = {"checkpoint": str(model), "weights_sha256": {
    p.name: file_sha256(p) for p in sorted(model.iterdir()) if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}}
json.dump(report, open(path, "w"), indent=1)
PY
