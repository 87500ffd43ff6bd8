"""CPU probe: the GSA layer's s and g rounded to bfloat16 (values and gradients), as the layer does on a GPU under
bf16 autocast (`s.to(q.dtype)`, `g.to(q.dtype)`), everything else float32. Run beside a plain float32 run with the
same arguments (same seed and data): the difference between the two is the rounding alone.
Usage: python round_probe.py -- <gsa.train args>"""
import sys

import torch

import gsa.nn.attention as attn
from gsa.train import main

orig = attn.GatedSlotAttention._slot_writes


def rounded(self, f, B, T, dtype):
    s, g = orig(self, f, B, T, dtype)
    bf = lambda x: None if x is None else x.to(torch.bfloat16).to(x.dtype)  # noqa: E731
    return bf(s), bf(g)


attn.GatedSlotAttention._slot_writes = rounded
sys.exit(main(sys.argv[2:]))
