#!/usr/bin/env bash
# The kernel grid on one GPU: ours vs fla-core vs causal SDPA of the same width, every shape of `gsa bench grid`,
# side by side in one process (table, JSON and plot under $OUT): wall-clock times, and for ours and fla-core the
# GPU's busy time too (the kernels' device times summed; fla-core's wall time at the 1.3B shape is 1.5 ms of host work
# over its 2.3 ms of kernels, which a model step hides: BENCHMARKS.md, "Kernels").
#
#   bash benchmarks/recipes/kernels.sh                  # every shape; $OUT defaults to benchmarks/results/<gpu>
#   SHAPES=1.3b,hd128 JOBS=2 bash benchmarks/recipes/kernels.sh
#
# fla-core (optional): put its wheels in .whl/ (`pip download --no-deps fla-core==0.6.0 einops -d .whl`); they are
# installed under /tmp/site. fla-core autotunes on its first call at every (H, K, V), minutes a shape, so the
# recipe first runs that first call for each shape not yet tuned, JOBS processes at a time (each a few GB of GPU
# memory), with Triton's cache and autotune results on disk in $TRITON_CACHE_DIR; the timed run then reads them.
# The warm processes share the GPU, so fla-core's autotuner times its candidates beside other work: its choice
# may differ from a one-process autotune. The autotune results (small JSON files) are packed into
# $OUT/fla-autotune.tar; the recipe unpacks every benchmarks/results/*/fla-autotune.tar.gz (today h100's only)
# and .cache/fla-autotune.tar into the cache first (copy a newer $OUT/fla-autotune.tar to .cache/ to reuse it).
# Without them a shape takes 100-350 s to tune, with them ~35 s; the warm phase takes about ceil(classes / JOBS) x that
# (14 autotune classes in the full grid), then one short wave for the rest.
#
# Knobs: SHAPES (default all), JOBS (parallel warm processes, default 6; a call warming 14 at once on an H100 ended
# with the machine unresponsive, cause not established), WARM_LIMIT (s per warm process, default 420), BENCH_LIMIT
# (s for the timed run, default 540), PROFILE=1 (our per-kernel times per shape), GRID_ARGS (more flags for the timed
# run, e.g. GRID_ARGS="--launch '{...}'" to time ours under other launch options beside the defaults; eval'd).
source "$(dirname "$0")/common.sh"
set +e  # a shape whose fla-core tuning times out is reported and skipped, not fatal
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.cache/triton} TRITON_CACHE_AUTOTUNING=1
SHAPES=${SHAPES:-all}
mkdir -p "$TRITON_CACHE_DIR"

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1 \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# autotune results kept from earlier runs (the results page's copy, then a newer one from this machine's last run)
for t in benchmarks/results/*/fla-autotune.tar.gz .cache/fla-autotune.tar; do
  [ -f "$t" ] && tar xf "$t" -C "$TRITON_CACHE_DIR"
done

if $PY -c "import fla.ops.gsa" 2>/dev/null; then
  # Two waves: one shape of each autotune class first (`--list-first`), then the rest, which start from the
  # first wave's cached results instead of tuning the same kernels again in parallel.
  warm() {  # the untuned shapes among $1, JOBS at a time
    todo=""
    for n in $1; do [ -f "$TRITON_CACHE_DIR/gsa-fla-tuned/$n" ] || todo="$todo $n"; done
    [ -z "$todo" ] && return
    echo "fla-core: tuning$todo (${JOBS:-6} at a time)"
    t0=$(date +%s)
    echo $todo | tr ' ' '\n' | xargs -P "${JOBS:-6}" -I{} sh -c \
      "timeout ${WARM_LIMIT:-420} $PY -m gsa bench grid --warm-fla {} > /tmp/warm-{}.log 2>&1 || echo 'fla-core warm {} failed or timed out'"
    echo "fla-core tuning took $(( $(date +%s) - t0 )) s"; tail -n 3 /tmp/warm-*.log >> "$OUT/warm.log"
  }
  : > "$OUT/warm.log"
  warm "$($PY -m gsa bench grid --shapes "$SHAPES" --list-first)"
  warm "$($PY -m gsa bench grid --shapes "$SHAPES" --list | awk '{print $1}')"
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -o -path './gsa-fla-tuned/*' | tar cf - -T -) \
    > "$OUT/fla-autotune.tar"
fi

eval "timeout \"${BENCH_LIMIT:-540}\" $PY -m gsa bench grid --shapes \"$SHAPES\" --out \"$OUT\" ${PROFILE:+--profile} \
  ${GRID_ARGS:-}" 2>&1 | tee "$OUT/grid.log"
