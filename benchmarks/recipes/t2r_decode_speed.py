"""Decode speed of the T2R students vs their teacher (results page, "T2R"), at the teacher's real architecture, without
its weights.

Timing does not depend on trained values, so the teacher is a randomly initialised Llama with SmolLM2-135M's config
(30 layers, d 576, 9 query / 3 key-value heads, vocabulary 49152, tied embeddings) and the students are its
conversions: the hybrid (teacher attention over 64 recent + 4 sink tokens beside 64 GSA slots, the recipe that
recalls) and the plain GSA student. Students decode with `gsa.models.StaticDecoder` (compiled step in a CUDA graph),
the teacher with transformers' static cache and a compiled step (`gsa.bench.decode`'s two timers). bf16, greedy,
ms per token (median of --new-tokens steps) after a prompt of each prefix length; time to first token; state bytes.

    python benchmarks/recipes/t2r_decode_speed.py --prefixes 2048,8192 --batches 1,8 --out t2r-decode.json
    python benchmarks/recipes/t2r_decode_speed.py --prefixes 16 --batches 1 --new-tokens 2 --layers 2 --no-compile
        --out /tmp/t2r-decode.json                                      (one line: a smoke run on a CPU, seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsa.bench.common import release_memory  # noqa: E402
from gsa.bench.decode import bench_gsa, bench_llama  # noqa: E402
from gsa.convert import from_pretrained_transformer  # noqa: E402


def smollm2_135m_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
              rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu")
    kw.update(overrides)
    return LlamaConfig(**kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefixes", default="512,2048,8192")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--layers", type=int, default=30, help="fewer for a CPU smoke run")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from transformers import LlamaForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    cfg = smollm2_135m_config(num_hidden_layers=args.layers)
    teacher = LlamaForCausalLM(cfg).eval()
    students = {"hybrid (window 64 + 4 sinks, 64 slots)": dict(window_size=64, num_sink_tokens=4),
                "plain GSA (64 slots)": {}}
    models = {"teacher (static cache)": teacher}
    models.update({k: from_pretrained_transformer(teacher, num_slots=64, **kw).eval() for k, kw in students.items()})
    rows = []
    compile = not args.no_compile
    for name, model in models.items():
        model = model.to(device=device, dtype=dtype)
        for B in (int(b) for b in args.batches.split(",")):
            for prefix in (int(x) for x in args.prefixes.split(",")):
                row = {"model": name, "batch": B, "prefix": prefix}
                with torch.no_grad():
                    if model is teacher:
                        row.update(bench_llama(model, B, prefix, args.new_tokens, compile, device))
                    else:
                        row.update(bench_gsa(model, B, prefix, args.new_tokens, compile, device))
                rows.append(row)
                print(json.dumps(row), flush=True)
        model.to("cpu")
        release_memory(device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    args.out.write_text(json.dumps({"device": str(device), "gpu": gpu, "rows": rows}, indent=1))
    print(f"\n{'model':40s} {'B':>3s} {'prefix':>7s} {'ms/token':>9s} {'TTFT ms':>9s} {'state MB/seq':>13s}")
    for r in rows:
        print(f"{r['model'][:40]:40s} {r['batch']:3d} {r['prefix']:7d} {r['ms_per_token']:9.3f} {r['ttft_ms']:9.1f} "
              f"{r['state_bytes_per_seq'] / 1e6:13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
