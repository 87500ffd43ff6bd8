#!/usr/bin/env bash
# Decoding latency after a long prompt, GSA-1.3B (StaticDecoder: compiled step in a CUDA graph) vs Llama-1.3B
# (transformers' static cache, compiled) (results page, "Decoding"): ms per token and time to first token at batches
# 1, 4, 32 after 2K, 8K and 32K tokens. GSA and Llama run one after the other (Llama stops at batch 4: its KV cache
# for 32 x 8K does not fit 80 GB), then `gsa bench decode --merge` joins them. ~9 minutes on an H100.
#   bash benchmarks/recipes/decode.sh
#   bash benchmarks/recipes/decode.sh --size tiny --prefixes 16,32 --new-tokens 3 --no-compile   # a smoke run (CPU)
# Writes decode.json and decode.png (and the two runs' decode-gsa.json, decode-llama.json) to $OUT (default
# benchmarks/results/<gpu>/). Extra arguments go to both runs (python -m gsa.bench.decode --help).
source "$(dirname "$0")/common.sh"
$PY -m gsa.bench.decode --models gsa --batches 1,4,32 --prefixes 2048,8192,32768 --out "$OUT/decode-gsa.json" "$@"
$PY -m gsa.bench.decode --models llama --batches 1,4 --prefixes 2048,8192,32768 --out "$OUT/decode-llama.json" "$@"
$PY -m gsa.bench.decode --merge "$OUT/decode-gsa.json,$OUT/decode-llama.json" --out "$OUT/decode.json"
