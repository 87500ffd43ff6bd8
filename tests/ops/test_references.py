"""The two references agree with each other (float64) and with a hand-written single step."""

import pytest
import torch

from gsa.ops import parallel_reference, recurrent_reference
from op_inputs import assert_matches, make_inputs, run


@pytest.mark.parametrize("T", [1, 17, 65])
@pytest.mark.parametrize("HQ", [2, 4])
@pytest.mark.parametrize("abc", [False, True])
@pytest.mark.parametrize("init_state", [False, True])
def test_references_agree(T, HQ, abc, init_state):
    x = make_inputs(B=2, T=T, HQ=HQ, H=2, K=6, V=5, M=7, abc=abc, init_state=init_state)
    assert_matches(run(recurrent_reference, x), run(parallel_reference, x), tol=1e-12)


def test_references_agree_packed():
    x = make_inputs(B=1, T=30, N=3, init_state=True)
    cu = torch.tensor([0, 1, 12, 30])
    assert_matches(run(recurrent_reference, x, cu_seqlens=cu), run(parallel_reference, x, cu_seqlens=cu), tol=1e-12)


@pytest.mark.parametrize("ref", [recurrent_reference, parallel_reference])
def test_two_steps_by_hand(ref):
    """Two steps of the recurrence written out with plain tensors, no einsum, from a nonzero state."""
    x = make_inputs(B=1, T=2, HQ=1, H=1, K=3, V=2, M=4, init_state=True)
    q, k, v, s, g = (x[n].detach()[0, :, 0] for n in ("q", "k", "v", "s", "g"))
    hk, hv = x["hk0"].detach()[0, 0], x["hv0"].detach()[0, 0]
    scale = 0.7
    outs = []
    for t in range(2):
        a = g[t].exp()
        hk = hk * a[None, :] + k[t][:, None] * s[t][None, :]
        p = torch.softmax(scale * (q[t] @ hk), dim=0)
        hv = hv * a[:, None] + s[t][:, None] * v[t][None, :]
        outs.append(p @ hv)
    o, (fk, fv) = ref(*(x[n] for n in ("q", "k", "v", "s", "g")), scale=scale,
                      initial_state=(x["hk0"], x["hv0"]), output_final_state=True)
    torch.testing.assert_close(o[0, :, 0].detach(), torch.stack(outs), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fk[0, 0].detach(), hk, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fv[0, 0].detach(), hv, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("abc", [False, True])
def test_references_agree_without_softmax(abc):
    x = make_inputs(B=2, T=33, HQ=4, H=2, K=6, V=5, M=7, abc=abc)
    assert_matches(run(recurrent_reference, x, slot_read="linear"), run(parallel_reference, x, slot_read="linear"),
                   tol=1e-12)
