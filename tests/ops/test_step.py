"""gated_slot_attention_step: a decode step from raw projections (feature map and gate inside), in place.

References: the token-by-token float64 loop on explicitly mapped inputs (independent of the step's own code),
and, for the triton kernels on the interpreter, the torch path of the same function.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from gsa.ops import gated_slot_attention_step, recurrent_reference


def _raw(B=2, T=3, HQ=4, H=2, K=16, V=12, M=8, dtype=torch.float64, seed=0, big_logits=False):
    torch.manual_seed(seed)
    y = torch.randn(B, T, HQ * K + H * K + H * V + H * M, dtype=dtype)  # one fused projection output
    if big_logits:  # logsigmoid(f) ~ -exp(-f): where log(1 + e) and 1 - exp(g) round to zero in float32
        y[..., -H * M:] += 25.0
    q, k, v, f = y.split([HQ * K, H * K, H * V, H * M], dim=-1)
    state = (torch.randn(B, H, K, M, dtype=torch.float32), torch.randn(B, H, M, V, dtype=torch.float32))
    return (q.view(B, T, HQ, K), k.view(B, T, H, K), v.view(B, T, H, V), f.view(B, T, H, M)), state


def _reference(q, k, v, f, state, tau, swish, scale):
    q, k, v, f = (x.double() for x in (q, k, v, f))
    if swish:
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    g = F.logsigmoid(f) / tau
    o, (hk, hv) = recurrent_reference(q, k, v, -torch.expm1(g), g, scale=scale,
                                      initial_state=tuple(x.double() for x in state), output_final_state=True)
    return o, hk, hv


@pytest.mark.parametrize("swish", [True, False])
@pytest.mark.parametrize("big_logits", [False, True])
def test_torch_path_matches_the_mapped_reference(swish, big_logits):
    (q, k, v, f), state = _raw(dtype=torch.float32, big_logits=big_logits)
    want = _reference(q, k, v, f, state, 4.0, swish, 0.3)
    buffers = tuple(x.clone() for x in state)
    o = gated_slot_attention_step(q, k, v, f, buffers, scale=0.3, gate_logit_normalizer=4.0,
                                  feature_map="swish" if swish else "identity", backend="torch")
    torch.testing.assert_close(o.double(), want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(buffers[0].double(), want[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(buffers[1].double(), want[2], rtol=1e-5, atol=1e-6)


def test_half_precision_projections_on_the_torch_path():
    """bf16 projections (a bf16 model decoding on the CPU): s and g follow q's dtype there, as the op needs."""
    (q, k, v, f), state = _raw(dtype=torch.float32, big_logits=False)
    want = _reference(q, k, v, f, state, 4.0, True, 0.3)
    lo = [x.bfloat16() for x in (q, k, v, f)]
    o = gated_slot_attention_step(*lo, state, scale=0.3, gate_logit_normalizer=4.0, backend="torch")
    assert o.dtype == torch.bfloat16
    # bf16 rounding of the inputs, of s and g and of o (eps 3.9e-3): 2.2e-3 measured, norm-wise
    assert ((o.double() - want[0]).norm() / want[0].norm()).item() < 1e-2


def test_bad_arguments_are_refused():
    (q, k, v, f), state = _raw(dtype=torch.float32)
    with pytest.raises(ValueError, match="s"):
        gated_slot_attention_step(q, k, v, f[..., :3], state)
    with pytest.raises(ValueError, match="feature_map"):
        gated_slot_attention_step(q, k, v, f, state, feature_map="relu")
    with pytest.raises(ValueError, match="gate_logit_normalizer"):
        gated_slot_attention_step(q, k, v, f, state, gate_logit_normalizer=0.0)
    with pytest.raises(TypeError, match="float32"):
        gated_slot_attention_step(q, k, v, f, (state[0].double(), state[1]))
    with pytest.raises(ValueError, match="contiguous"):
        gated_slot_attention_step(q, k, v, f, (state[0].transpose(2, 3).contiguous().transpose(2, 3), state[1]))


@pytest.mark.slow
def test_compiles_with_a_symbolic_scale():
    """Under torch.compile a float may arrive symbolic (a recompile makes it dynamic: a second model's
    StaticDecoder did so on the H100, and the validation's math.isfinite broke the full graph). Two scales through
    one dynamic graph give the eager results; eager calls still refuse a non-finite scale."""
    (q, k, v, f), state = _raw(dtype=torch.float32)

    def step(q, k, v, f, scale):
        hk, hv = (x.clone() for x in state)
        return gated_slot_attention_step(q, k, v, f, (hk, hv), scale=scale)

    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend="eager")
    for scale in (0.25, 0.5):
        torch.testing.assert_close(compiled(q, k, v, f, scale), step(q, k, v, f, scale))
    with pytest.raises(ValueError, match="finite"):
        step(q, k, v, f, float("inf"))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="the triton kernels need a GPU or TRITON_INTERPRET=1 (tests/conftest.py sets it on CPU)")
@pytest.mark.parametrize("swish,slot_read,big_logits", [(True, "softmax", False), (False, "softmax", True),
                                                         (True, "linear", False)])
@pytest.mark.parametrize("T", [1, 3])
def test_triton_kernels_match_the_torch_path(swish, slot_read, big_logits, T):
    """q, k, v and f as column views of one fused output (read in place), grouped heads, in place."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    (q, k, v, f), state = _raw(T=T, dtype=torch.float32, big_logits=big_logits)
    q, k, v, f = (x.to(device) for x in (q, k, v, f))
    kw = dict(scale=0.3, gate_logit_normalizer=4.0, feature_map="swish" if swish else "identity",
              slot_read=slot_read)
    ref_state = tuple(x.clone().to(device) for x in state)
    got_state = tuple(x.clone().to(device) for x in state)
    want = gated_slot_attention_step(q, k, v, f, ref_state, backend="torch", **kw)
    got = gated_slot_attention_step(q, k, v, f, got_state, backend="triton", **kw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_state[0], ref_state[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_state[1], ref_state[1], rtol=1e-5, atol=1e-6)
