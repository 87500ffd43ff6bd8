"""`inplace_state=True`: the decode path advances caller-owned state buffers and writes nothing else."""

import importlib.util

import pytest
import torch

from gsa.ops import gated_slot_attention
from op_inputs import cast, make_inputs

BACKENDS = ["torch", "reference"] + (["triton"] if importlib.util.find_spec("triton") else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("abc", [False, True])
def test_steps_in_place_equal_one_pass(backend, abc):
    x = cast(make_inputs(B=2, T=12, HQ=4, H=2, K=16, V=16, M=8, tau=1.0, abc=abc), torch.float32)
    f = {n: None if t is None else t.detach().to(DEVICE) for n, t in x.items()}
    with torch.no_grad():
        o, st = gated_slot_attention(f["q"], f["k"], f["v"], f["s"], f["g"], initial_state=(f["hk0"], f["hv0"]),
                                     output_final_state=True, backend="torch")
        hk, hv = f["hk0"].clone(), f["hv0"].clone()
        before = {n: t.clone() for n, t in f.items() if t is not None}
        outs = []
        # ABC's normaliser restarts at every call, so ABC chains only in one call of all 12 steps.
        steps = [slice(0, 12)] if abc else [slice(t, t + 1) for t in range(12)]
        for sl in steps:
            o_t, st_t = gated_slot_attention(f["q"][:, sl], f["k"][:, sl], f["v"][:, sl], f["s"][:, sl],
                                             None if abc else f["g"][:, sl], initial_state=(hk, hv),
                                             output_final_state=True, backend=backend, inplace_state=True)
            assert st_t[0] is hk and st_t[1] is hv
            outs.append(o_t)
    torch.testing.assert_close(torch.cat(outs, 1), o, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hk, st[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hv, st[1], rtol=1e-5, atol=1e-5)
    for n, t in before.items():
        assert torch.equal(f[n], t), f"{n} was modified"


def test_inplace_state_errors():
    x = cast(make_inputs(B=1, T=2, K=16, V=16, M=8), torch.float32)
    q, k, v, s, g = (x[n] for n in ("q", "k", "v", "s", "g"))
    hk, hv = x["hk0"].detach(), x["hv0"].detach()
    with pytest.raises(ValueError, match="needs the state buffers"):
        gated_slot_attention(q, k, v, s, g, inplace_state=True)
    with pytest.raises(ValueError, match="does not support autograd"):
        gated_slot_attention(q, k, v, s, g, initial_state=(hk, hv), inplace_state=True)
    with torch.no_grad(), pytest.raises(ValueError, match="contiguous float32 buffer"):
        gated_slot_attention(q, k, v, s, g, initial_state=(hk.transpose(2, 3).contiguous().transpose(2, 3), hv),
                             inplace_state=True)
