# Sourced by the T2R device scripts. The carry is one tar split in three (.carry/t2r.tar.part-aa/ab/ac, 43 MB each:
# one part and the working tree fit a call's 64 MiB). MODE=stash calls keep the parts they carry in KEEP (/tmp/keep,
# kept while the machine stays warm); unpack_t2r_carry DIR KEEP joins the parts (carried now or kept), checks the
# md5 (written to DIR/carry.md5), unpacks it into KEEP/t2r and installs its wheels into KEEP/site.
unpack_t2r_carry() {
  local dir=$1 keep=$2
  local part parts=()
  for part in aa ab ac; do
    if [ -f .carry/t2r.tar.part-$part ]; then parts+=(.carry/t2r.tar.part-$part)
    else parts+=("$keep/t2r.tar.part-$part"); fi
  done
  cat "${parts[@]}" > /tmp/t2r.tar || exit 1
  md5sum /tmp/t2r.tar | tee "$dir/carry.md5"
  grep -q a3c14faa71c4163651792172a5acc007 "$dir/carry.md5" || { echo "carried tar is damaged"; exit 1; }
  mkdir -p "$keep/t2r" && tar xf /tmp/t2r.tar -C "$keep/t2r" && rm /tmp/t2r.tar
  python -m pip install -q --no-index --no-deps --target "$keep/site" "$keep"/t2r/wheels/*.whl > "$dir/pip.log" 2>&1
}

# t2r_outputs NAME TAR: the results folder R=$OUT/NAME (created), K=/tmp/keep, START, and an exit trap that packs
# R into $OUT/TAR (so a timed-out call still returns what it wrote).
t2r_outputs() {
  export PYTHONUNBUFFERED=1
  OUT=${OUT:-/tmp/out}; R=$OUT/$1; mkdir -p "$R"
  K=/tmp/keep; START=$SECONDS
  trap "tar cf '$OUT/$2' -C '$OUT' '$1'" EXIT
}

# t2r_workspace MODE: with MODE=train, unpack the carry (unpack_t2r_carry); then link the unpacked data as .cache/t2r,
# put its wheels on PYTHONPATH, and set TOK (the 14M-token subset) and COMMON (the trainer overrides both use).
t2r_workspace() {
  [ "$1" = train ] && unpack_t2r_carry "$R" $K
  mkdir -p .cache && ln -sfn $K/t2r .cache/t2r
  export PYTHONPATH=$PWD:$K/site
  TOK='data.tokens=".cache/t2r/tokens/tokens-sub14m"'
  COMMON=(train.progress=false train.checkpoint_every=0 train.eval_every=0 train.eval_sequences=64 train.log_every=20)
}

# t2r_report END NAME ARGS...: scripts/t2r_report.py on the 14M-token subset's held-out split and the carried teacher,
# with ARGS (--student NAME=DIR ..., probe and decode options), until second END of the call; writes $R/NAME.json and
# $R/NAME.log and prints the log's table.
t2r_report() {
  local end=$1 name=$2; shift 2
  timeout $((end - (SECONDS - START))) python scripts/t2r_report.py --tokens .cache/t2r/tokens/tokens-sub14m \
    --teacher .cache/t2r/teacher "$@" --out "$R/$name.json" > "$R/$name.log" 2>&1
  echo "report rc=$? at $((SECONDS - START)) s"; tail -9 "$R/$name.log"
}
