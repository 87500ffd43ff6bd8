"""CPU probe: GSA with a data-dependent forget gate whose f_proj has a bias spread over linspace(lo, hi, M) per head
(the 'fixed' gate's timescale spread, plus data dependence). Usage: python bias_probe.py LO HI -- <gsa.train args>"""
import sys
import torch
from torch import nn
import gsa.nn.attention as attn
import gsa.models.modeling as modeling
from gsa.train import main

lo, hi = float(sys.argv[1]), float(sys.argv[2])
orig_init = attn.GatedSlotAttention.__init__

def init(self, *a, **k):
    orig_init(self, *a, **k)
    if hasattr(self, "f_proj"):
        f = self.f_proj
        self.f_proj = nn.Linear(f.in_features, f.out_features, bias=True)

attn.GatedSlotAttention.__init__ = init
orig_post = modeling.GSAPreTrainedModel.post_init

def post_init(self):
    orig_post(self)
    with torch.no_grad():
        for module in self.modules():
            if isinstance(module, attn.GatedSlotAttention) and hasattr(module, "f_proj"):
                module.f_proj.bias.copy_(torch.linspace(lo, hi, module.num_slots).repeat(module.num_kv_heads))

modeling.GSAPreTrainedModel.post_init = post_init
sys.exit(main(sys.argv[4:]))
