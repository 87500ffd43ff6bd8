# Sourced by the device scripts of session 14: `ops_ab SHAPES DIR [TIMEOUT]` runs the op benchmark (with the
# per-kernel profile) on this tree ("new") and then on the tree carried as .carry/old ("old") in the same call,
# writing DIR/ops-{new,old}.{json,log} and printing the result rows. Make the old tree with
#   rm -rf .carry/old && mkdir -p .carry/old && git archive <commit> gsa | tar -x -C .carry/old
ops_ab() {
  local shapes=$1 dir=$2 limit=${3:-150} tree root
  for tree in new old; do
    root=$PWD; [ $tree = old ] && root=$PWD/.carry/old
    # run from the tree's own directory: `python -c` puts the working directory first on sys.path
    (cd "$root" && PYTHONPATH=$root timeout "$limit" python -c "import gsa; assert gsa.__file__.startswith('$root')
from gsa.bench.ops import main
main(['--shapes', '$shapes', '--profile', '--decode-batches', '', '--out', '$dir/ops-$tree.json'])" \
      > "$dir/ops-$tree.log" 2>&1)
    echo "$tree rc=$?"; grep -E "^(1.3b|grouped|small)" "$dir/ops-$tree.log"
  done
}
