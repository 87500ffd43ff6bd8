#!/usr/bin/env bash
# Our kernels against an earlier commit's, in one GPU call: timings compare only within one call on one machine.
#   bash benchmarks/recipes/ab.sh pack BASE            # here, in a git checkout: BASE's gsa/ into .cache/ab-base
#   bash benchmarks/recipes/ab.sh run [GRID ARGS]      # on the GPU, .cache/ab-base carried (device tool: carry it)
# `run` times `gsa bench grid --fla never --no-sdpa --profile GRID ARGS` over BASE's tree, then over this one, and
# prints both side by side (`gsa bench grid --compare`). GRID ARGS default to --shapes 1.3b,hd128,gqa32-8; BASE's
# own `gsa bench grid` must take them. Writes $OUT/ab-base/grid.json, $OUT/ab-head/grid.json and $OUT/ab.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BASE_DIR=${AB_BASE_DIR:-.cache/ab-base}
case "${1:-}" in
  pack)
    [ $# -eq 2 ] || { echo "usage: ab.sh pack BASE (a commit)" >&2; exit 2; }
    rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR"
    git archive "$2" gsa | tar -x -C "$BASE_DIR"
    git rev-parse "$2" > "$BASE_DIR/COMMIT"
    echo "packed $(cat "$BASE_DIR/COMMIT") into $BASE_DIR" ;;
  run)
    shift
    [ -d "$BASE_DIR/gsa" ] || { echo "no $BASE_DIR/gsa: run 'ab.sh pack BASE' first and carry it" >&2; exit 2; }
    source benchmarks/recipes/common.sh
    [ $# -gt 0 ] || set -- --shapes 1.3b,hd128,gqa32-8
    OUT=$(cd "$OUT" && pwd)
    # the base tree first on the path, and as the working directory (python -m puts it first too)
    (cd "$BASE_DIR" && PYTHONPATH=$PWD:$PYTHONPATH $PY -m gsa bench grid --fla never --no-sdpa --profile "$@" \
      --out "$OUT/ab-base" > "$OUT/ab-base.log" 2>&1) || { tail -5 "$OUT/ab-base.log"; exit 1; }
    $PY -m gsa bench grid --fla never --no-sdpa --profile "$@" --out "$OUT/ab-head" > "$OUT/ab-head.log" 2>&1 \
      || { tail -5 "$OUT/ab-head.log"; exit 1; }
    { echo "base $(cat "$BASE_DIR/COMMIT" 2>/dev/null || echo '?'), head this tree"; echo
      $PY -m gsa bench grid --compare "$OUT/ab-base/grid.json" "$OUT/ab-head/grid.json"; } | tee "$OUT/ab.md" ;;
  *) echo "usage: ab.sh pack BASE | ab.sh run [GRID ARGS]" >&2; exit 2 ;;
esac
