#!/usr/bin/env bash
# The T2R teacher and token cache in three pieces of at most 60 MB, for a GPU machine without network that takes
# at most 64 MiB of carried files a call (docs/convert.md, "The real teacher and corpus (no network on the GPU
# machines)"). The teacher travels as its GGUF (94 MB) instead of the bf16 checkpoint (269 MB in 5 shards) and is
# rebuilt there by `prepare_t2r_data.py teacher` (bitwise the same safetensors on transformers 5.23).
#
#   bash scripts/t2r_carry.sh pack [TOKENS_DIR]   # here, after `python scripts/prepare_t2r_data.py all`:
#                                                 # writes .cache/t2r-carry/{1,2,3}/ (TOKENS_DIR: default the
#                                                 # newest .cache/t2r/tokens/tokens-*)
#   then carry .cache/t2r-carry/1, /2 and /3, one a call, on one warm machine; on it:
#   bash scripts/t2r_carry.sh unpack              # .cache/t2r/gguf, .cache/t2r/tokens/<name>, the gguf and
#                                                 # accelerate wheels under /tmp/site, then the teacher
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARRY=.cache/t2r-carry; PY=${PYTHON:-python3}
case "${1:-}" in
  pack)
    tokens=${2:-$(ls -dt .cache/t2r/tokens/tokens-* | head -1)}
    gguf=$(ls .cache/t2r/gguf/*.gguf)
    rm -rf "$CARRY"; mkdir -p "$CARRY"/{1,2,3}
    split -b 50M -d -a 1 "$gguf" "$CARRY/1/gguf.part"    # two parts of the 94 MB file
    mv "$CARRY/1/gguf.part1" "$CARRY/2/"
    $PY -m pip download -q --no-deps gguf accelerate -d "$CARRY/2" > /dev/null
    tar cf "$CARRY/3/tokens.tar" -C "$(dirname "$tokens")" "$(basename "$tokens")"
    basename "$gguf" > "$CARRY/2/gguf.name"
    du -sh "$CARRY"/*
    for d in "$CARRY"/*; do
      [ "$(du -sm "$d" | cut -f1)" -le 60 ] || { echo "$d is over 60 MB" >&2; exit 1; }
    done ;;
  unpack)
    mkdir -p .cache/t2r/gguf .cache/t2r/tokens
    cat "$CARRY/1/gguf.part0" "$CARRY/2/gguf.part1" > ".cache/t2r/gguf/$(cat "$CARRY/2/gguf.name")"
    tar xf "$CARRY/3/tokens.tar" -C .cache/t2r/tokens
    $PY -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/2/*.whl
    PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH} $PY scripts/prepare_t2r_data.py teacher
    echo "teacher: .cache/t2r/teacher; tokens: $(ls -d .cache/t2r/tokens/tokens-*)" ;;
  *) echo "usage: bash scripts/t2r_carry.sh pack [TOKENS_DIR] | unpack" >&2; exit 2 ;;
esac
