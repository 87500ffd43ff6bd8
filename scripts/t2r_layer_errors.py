"""Where a converted GSA student departs from its teacher, layer by layer, on held-out windows:

- attn: each student attention layer on the teacher's own input to that layer, against the teacher layer's output
  (what stage 1, `gsa.convert.distill.attention_transfer_loss`, trains): sum (y - t)^2 / sum t^2;
- stream: the residual stream after each block when both models run end to end on the same tokens (errors
  compounding through the layers), same relative measure;
- the teacher attention output's mean square per layer (the unnormalised stage-1 loss weighs layers by it).

    python scripts/t2r_layer_errors.py --tokens .cache/t2r/tokens/tokens-<key> --teacher .cache/t2r/teacher \
        --student converted=convert --student stage1=runs/t2r-stage1/model --windows 8 --seq-len 256 --out e.json

A student spec NAME=convert converts the teacher with the defaults (`gsa.convert.from_pretrained_transformer`).
Prints one row a layer and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsa.convert.distill import block_io, teacher_attention_io  # noqa: E402
from gsa.data import load_text_data  # noqa: E402


def _relative(y: torch.Tensor, t: torch.Tensor) -> float:
    return float((y.float() - t.float()).pow(2).sum() / t.float().pow(2).sum().clamp(min=1e-30))


@torch.no_grad()
def teacher_io(teacher, ids: torch.Tensor) -> tuple[list, list, list]:
    """What layer_errors compares every student with, on ids [B, T]: per layer the teacher attention's input and
    output, and the residual stream after the block."""
    inputs, targets, _ = teacher_attention_io(teacher, ids, None)
    return inputs, targets, block_io(teacher, ids, None)[1]


@torch.no_grad()
def layer_errors(teacher_io: tuple[list, list, list], student, ids: torch.Tensor) -> list[dict]:
    """Per layer: attn (relative error on the teacher's inputs), stream (end to end) and the teacher attention
    output's mean square, on ids [B, T] (teacher_io: teacher_io(teacher, ids))."""
    inputs, targets, t_stream = teacher_io
    if len(student.model.layers) != len(inputs):
        raise ValueError(f"student has {len(student.model.layers)} layers, teacher {len(inputs)}")
    _, s_stream = block_io(student, ids, None)
    rows = []
    for i, (block, x, t) in enumerate(zip(student.model.layers, inputs, targets)):
        y, _ = block.attn(x.to(block.attn.q_proj.weight.dtype), None)
        rows.append({"layer": i, "attn": _relative(y, t), "stream": _relative(s_stream[i], t_stream[i]),
                     "target_ms": float(t.float().pow(2).mean())})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", required=True, help="token cache directory (its held-out split is read)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory (also the tokenizer)")
    p.add_argument("--student", action="append", required=True,
                   help="NAME=DIR of a saved GSA model, or NAME=convert (repeatable)")
    p.add_argument("--windows", type=int, default=8, help="held-out windows (the first ones)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.windows < 1 or args.seq_len < 2:
        p.error(f"--windows must be >= 1 and --seq-len >= 2, got {args.windows} and {args.seq_len}")
    specs = [s.split("=", 1) for s in args.student]
    if any(len(s) != 2 or not all(s) for s in specs):
        p.error(f"--student takes NAME=DIR or NAME=convert, got {args.student}")

    import gsa.models  # noqa: F401  (Auto classes)
    from transformers import AutoModelForCausalLM

    from gsa.convert import from_pretrained_transformer

    data = load_text_data(args.tokens, args.teacher)
    n = args.windows * args.seq_len
    if len(data.heldout.tokens) < n:
        p.error(f"the held-out split has {len(data.heldout.tokens)} tokens, fewer than {args.windows} x {args.seq_len}")
    ids = torch.from_numpy(data.heldout.tokens[:n].astype("int64")).view(args.windows, args.seq_len)  # a copy
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    reference = teacher_io(teacher, ids)  # once for every student
    table = {}
    for name, src in specs:
        student = (from_pretrained_transformer(teacher, dtype=torch.float32) if src == "convert"
                   else AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)).eval()
        table[name] = layer_errors(reference, student, ids)
    print("layer " + " ".join(f"{name + ' attn':>14} {name + ' stream':>14}" for name in table) + "  teacher out ms")
    for i in range(len(teacher.model.layers)):
        cells = " ".join(f"{table[n][i]['attn']:14.3f} {table[n][i]['stream']:14.3f}" for n in table)
        print(f"{i:5d} {cells}  {next(iter(table.values()))[i]['target_ms']:.3g}")
    if args.out:
        args.out.write_text(json.dumps({"windows": args.windows, "seq_len": args.seq_len, "layers": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
