#!/usr/bin/env bash
# The T2R teacher and token cache in two pieces of at most 60 MB, for a GPU machine without network that takes at
# most 64 MiB of carried files a call (docs/convert.md, "The real teacher and corpus (no network on the GPU
# machines)"). The teacher travels as its GGUF (94 MB) instead of the bf16 checkpoint (269 MB in 5 shards) and is
# rebuilt there by `prepare_t2r_data.py teacher` (bitwise the same safetensors on transformers 5.23); the token
# cache travels as an xz tar (45 MB of uint16 tokens -> 16 MB).
#
#   bash scripts/t2r_carry.sh pack [TOKENS_DIR]   # here, after `python scripts/prepare_t2r_data.py all`:
#                                                 # writes .cache/t2r-carry/{1,2}/ (TOKENS_DIR: default the
#                                                 # newest .cache/t2r/tokens/tokens-*)
#   then carry .cache/t2r-carry/1 and /2, one a call, on one warm machine; on it:
#   bash scripts/t2r_carry.sh unpack              # .cache/t2r/gguf, .cache/t2r/tokens/<name>, the gguf and
#                                                 # accelerate wheels under /tmp/site, then the teacher
#
# WHEELS_FROM=DIR: take the gguf and accelerate wheels from DIR instead of `pip download` (offline packing).
# PIECE_MB (default 57): the GGUF bytes in piece 1; piece 2 holds the rest, the wheels and the tokens.
# CARRY (default .cache/t2r-carry) and T2R_CACHE (default .cache/t2r): where the pieces and the cache are.
# SKIP_TEACHER=1: unpack the files only (no wheels installed, no teacher rebuilt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARRY=${CARRY:-.cache/t2r-carry}; T2R=${T2R_CACHE:-.cache/t2r}; PY=${PYTHON:-python3}; LIMIT_MB=60
case "${1:-}" in
  pack)
    tokens=${2:-$(ls -dt "$T2R"/tokens/tokens-* | head -1)}
    gguf=$(ls "$T2R"/gguf/*.gguf)
    [ -f "$tokens/meta.json" ] || { echo "$tokens is not a token cache directory (no meta.json)" >&2; exit 2; }
    rm -rf "$CARRY"; mkdir -p "$CARRY"/{1,2}
    head -c "$(( ${PIECE_MB:-57} * 1000000 ))" "$gguf" > "$CARRY/1/gguf.part0"
    tail -c "+$(( ${PIECE_MB:-57} * 1000000 + 1 ))" "$gguf" > "$CARRY/2/gguf.part1"
    if [ -n "${WHEELS_FROM:-}" ]; then
      cp "$WHEELS_FROM"/gguf-*.whl "$WHEELS_FROM"/accelerate-*.whl "$CARRY/2/"
    else
      $PY -m pip download -q --no-deps gguf accelerate -d "$CARRY/2" > /dev/null
    fi
    $PY - "$tokens" "$CARRY/2/tokens.tar.xz" <<'PY'
import sys, tarfile
from pathlib import Path
src, out = Path(sys.argv[1]), sys.argv[2]
with tarfile.open(out, "w:xz", preset=6) as tar:
    tar.add(src, arcname=src.name)
PY
    basename "$gguf" > "$CARRY/2/gguf.name"
    du -sh "$CARRY"/*
    for d in "$CARRY"/*; do
      [ "$(du -sm "$d" | cut -f1)" -le $LIMIT_MB ] || { echo "$d is over $LIMIT_MB MB" >&2; exit 1; }
    done ;;
  unpack)
    mkdir -p "$T2R"/gguf "$T2R"/tokens
    cat "$CARRY/1/gguf.part0" "$CARRY/2/gguf.part1" > "$T2R/gguf/$(cat "$CARRY/2/gguf.name")"
    $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], filter="data")' \
      "$CARRY/2/tokens.tar.xz" "$T2R/tokens"
    [ "${SKIP_TEACHER:-0}" = 1 ] && exit 0  # tests: the pieces alone
    $PY -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/2/*.whl
    PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH} $PY scripts/prepare_t2r_data.py teacher --cache "$T2R"
    echo "teacher: $T2R/teacher; tokens: $(ls -d "$T2R"/tokens/tokens-*)" ;;
  *) echo "usage: bash scripts/t2r_carry.sh pack [TOKENS_DIR] | unpack" >&2; exit 2 ;;
esac
