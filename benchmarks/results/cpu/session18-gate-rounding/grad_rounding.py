"""CPU check: the relative error of the gradient w.r.t. the slot logits f when s and g are rounded to bfloat16
(values and gradients), against float64, on random inputs at MQAR d = 128 head sizes (K = V = 32, M = 64, T = 512)
with the gate bias 0 / 4 / 6. Usage: OMP_NUM_THREADS=1 python grad_rounding.py"""
import torch
from gsa.ops import gated_slot_attention, slot_gates
torch.manual_seed(0)
B,T,H,K,V,M = 2,512,2,32,32,64
def run(f, q,k,v, mode):
    s,g = slot_gates(f, 8.0)
    if mode=="bf16":
        s = s.to(torch.bfloat16).float(); g = g.to(torch.bfloat16).float()
    o,_ = gated_slot_attention(q,k,v,s,g,backend="torch" if mode!="f64" else "reference")
    return o
for bias in (0.0, 4.0, 6.0):
    base = torch.randn(B,T,H,M,dtype=torch.float64)+bias
    q,k,v = [torch.nn.functional.silu(torch.randn(B,T,H,d,dtype=torch.float64)) for d in (K,K,V)]
    w = torch.randn(B,T,H,V,dtype=torch.float64)
    grads={}
    for mode in ("f64","f32","bf16"):
        dt = torch.float64 if mode=="f64" else torch.float32
        f = base.to(dt).clone().requires_grad_()
        o = run(f, q.to(dt), k.to(dt), v.to(dt), mode)
        (o*w.to(dt)).sum().backward()
        grads[mode]=f.grad.double()
    ref=grads["f64"]
    for mode in ("f32","bf16"):
        e=(grads[mode]-ref).norm()/ref.norm()
        print(f"bias {bias}: df rel err {mode}: {e:.2e}")
