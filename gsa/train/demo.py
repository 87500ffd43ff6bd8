"""The demo: train a small GSA language model on the bundled corpus (Python's own documentation; no
download), then print its held-out perplexity and a generated sample, and say where the model is.

``python -m gsa.train.demo [--output-dir runs/demo] [--max-steps N] [--device cpu|cuda]``: GPU if present,
else CPU (a few minutes). Its config is ``DEMO_TOML`` below, shipped with the package so the demo needs no
checkout; ``configs/demo.toml`` is the same file (a test keeps them equal).
"""

from __future__ import annotations

import argparse
import sys
import time
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

DEMO_TOML = """\
# The README demo: a small GSA language model on the bundled corpus (Python's own documentation, no
# download). A few minutes on a laptop CPU; well under a minute on a GPU.
#   gsa train --config configs/demo.toml
#   gsa eval ppl --model runs/demo/model
#   gsa generate --model runs/demo/model --prompt "The list type"
seed = 0
output_dir = "runs/demo"

[model]
type = "gsa"
hidden_size = 128
num_hidden_layers = 4
num_heads = 4
num_slots = 32
tie_word_embeddings = true

[data]
sources = ["python-docs"]
tokenizer = "bpe"
vocab_size = 4096
seq_len = 256

[optim]
lr = 3e-3
warmup_steps = 30
min_lr_ratio = 0.1
weight_decay = 0.1

[train]
max_steps = 300
micro_batch_size = 8
log_every = 10
eval_every = 100
eval_sequences = 128
checkpoint_every = 100
"""

PROMPT = "The list type"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsa.train.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/demo", help="where checkpoints, metrics and the model go")
    p.add_argument("--max-steps", type=int, help="training steps (default 300)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--prompt", default=PROMPT, help=f"prompt of the generated sample (default {PROMPT!r})")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gsa  # noqa: F401  (registers GSA with the Auto classes)
    from gsa.data.cache import load_token_cache
    from gsa.data.tokenizer import token_byte_lengths
    from gsa.eval.perplexity import perplexity

    from .config import config_from_dict
    from .loop import train

    raw = tomllib.loads(DEMO_TOML)
    raw["output_dir"] = args.output_dir
    raw["train"]["device"] = args.device
    if args.max_steps is not None:
        raw["train"]["max_steps"] = args.max_steps
    cfg = config_from_dict(raw)
    t0 = time.perf_counter()
    summary = train(cfg)
    minutes = (time.perf_counter() - t0) / 60
    model_dir = summary["model_dir"]
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    from gsa.data.text import prepare_text_data

    data = prepare_text_data(cfg.data.sources, cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                             cfg.data.heldout_fraction, progress=False)
    heldout = load_token_cache(data.cache_path, "heldout")
    r = perplexity(model, heldout.tokens, token_byte_lengths(tok), cfg.data.seq_len, 16, device)
    ids = tok(args.prompt, return_tensors="pt").input_ids.to(device)
    torch.manual_seed(0)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=60, do_sample=True,
                         temperature=0.8, top_k=50, pad_token_id=tok.eos_token_id)
    print()
    print(f"trained {summary['num_params'] / 1e6:.1f}M-parameter GSA for {summary['step']} steps in {minutes:.1f} min")
    print(f"held-out perplexity {r['ppl']:.2f} ({r['bits_per_byte']:.3f} bits per byte, {r['tokens']:,} tokens)")
    print(f"sample: {tok.decode(out[0], skip_special_tokens=True)!r}")
    print(f"model (with tokenizer): {model_dir}; checkpoints: {cfg.output_dir}/checkpoints; "
          f"metrics: {cfg.output_dir}/metrics.jsonl")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
