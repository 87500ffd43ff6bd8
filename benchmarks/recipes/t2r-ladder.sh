#!/usr/bin/env bash
# Several rungs of the pure student's ladder side by side on one GPU, outliving the command that starts them (a
# GPU machine kills what a call leaves running unless it is its own process session; 50M tokens run longer than a
# 10-minute call): `start` launches each rung of RUNGS as benchmarks/recipes/t2r-pure.sh through background.sh,
# `wait` follows them, in the same call or in later calls on the same warm machine.
#   RUNGS="span m128" TOKENS_BUDGET=5M bash benchmarks/recipes/t2r-ladder.sh start
#   bash benchmarks/recipes/t2r-ladder.sh wait 540      # at most 540 s; exit 0 once every rung has finished, 3 while
#                                                       # any still runs (call `wait` again), 1 if a rung failed
# Every rung's report (t2r-pure-<rung>-<budget>-seed<seed>.json) and log go to $OUT as they finish. Three 135M
# students shared one H100 (62 GiB) at 5M tokens in 450 s (2026-12-06). Knobs: RUNGS (default "span m128"), and
# everything t2r-pure.sh reads (TOKENS_BUDGET, SEED, TEACHER, TOKENS, EXTRA, REPORT_EXTRA), RUNS (runs/t2r-pure),
# POLL (seconds between wait's checks, default 30). A rung written RUNG@LR runs RUNG with stage 2 at peak learning
# rate LR (t2r-pure.sh's S2_LR), under the name RUNG-lrLR: RUNGS="span span@3e-4 span@1e-3".
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-runs/t2r-pure}; STATE=$RUNS/ladder; mkdir -p "$STATE"
OUT=$(cd "$OUT" && pwd)
case "${1:-}" in
  start)
    # the data checks t2r-pure.sh does, once, here: a rung that cannot start fails this command, not in the dark
    TEACHER=$(teacher_dir "${TEACHER:-}"); TOKENS=$(token_cache "${TOKENS:-}"); export TEACHER TOKENS RUNS
    rm -rf "$STATE/out"; : > "$STATE/rungs"  # a report left from an earlier start must not pass for this one's
    for entry in ${RUNGS:-span m128}; do
      rung=${entry%%@*}; lr=; [ "$rung" != "$entry" ] && lr=${entry#*@}
      name=$rung${lr:+-lr$lr}
      OUT=$OUT BG=$STATE bash benchmarks/recipes/background.sh start "$name" -- \
        env ABLATION="$rung" S2_LR="$lr" OUT="$STATE/out" bash benchmarks/recipes/t2r-pure.sh || exit 1
      echo "$name" >> "$STATE/rungs"
    done ;;
  wait)
    [ -s "$STATE/rungs" ] || { echo "no rungs started under $STATE ('start' first)" >&2; exit 2; }
    limit=${2:-540}; t0=$(date +%s)
    while :; do
      running=0; failed=0
      while read -r rung; do  # background.sh keeps each rung's log, and its exit status once it has ended
        if [ ! -f "$STATE/$rung/rc" ]; then running=$((running + 1))
        elif [ "$(cat "$STATE/$rung/rc")" != 0 ]; then failed=$((failed + 1)); fi
        cp "$STATE/$rung/log" "$OUT/$rung.log" 2>/dev/null || true
      done < "$STATE/rungs"
      cp "$STATE"/out/*.json "$OUT"/ 2>/dev/null || true
      echo "[$(( $(date +%s) - t0 )) s] running $running, failed $failed; $(nvidia-smi \
        --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null | head -1)"
      [ "$running" -eq 0 ] && break
      [ $(( $(date +%s) - t0 )) -ge "$limit" ] && exit 3
      sleep "${POLL:-30}"
    done
    if [ "$failed" -gt 0 ]; then
      while read -r rung; do
        rc=$(cat "$STATE/$rung/rc")
        [ "$rc" = 0 ] || { echo "== $rung (status $rc)"; tail -n 5 "$STATE/$rung/log"; }
      done < "$STATE/rungs"
      exit 1
    fi ;;
  *) echo "usage: RUNGS=\"...\" bash benchmarks/recipes/t2r-ladder.sh start | wait [SECONDS]" >&2; exit 2 ;;
esac
