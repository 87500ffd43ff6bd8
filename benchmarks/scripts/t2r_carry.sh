# Sourced by the T2R device scripts. unpack_t2r_carry DIR KEEP: joins KEEP/t2r.tar.part-aa (left by an earlier call
# on the warm machine) with .carry/t2r.tar.part-ab (carried now), checks its md5 (written to DIR/carry.md5), unpacks
# it into KEEP/t2r (kept while the machine stays warm) and installs its wheels into KEEP/site.
unpack_t2r_carry() {
  local dir=$1 keep=$2
  cat "$keep/t2r.tar.part-aa" .carry/t2r.tar.part-ab > /tmp/t2r.tar || exit 1
  md5sum /tmp/t2r.tar | tee "$dir/carry.md5"
  grep -q a3c14faa71c4163651792172a5acc007 "$dir/carry.md5" || { echo "carried tar is damaged"; exit 1; }
  mkdir -p "$keep/t2r" && tar xf /tmp/t2r.tar -C "$keep/t2r" && rm /tmp/t2r.tar
  python -m pip install -q --no-index --no-deps --target "$keep/site" "$keep"/t2r/wheels/*.whl > "$dir/pip.log" 2>&1
}
