"""intermediate_size = 0: blocks without an MLP (x = x + GSA(RMSNorm(x)) alone, as Zoology's MQAR models).
The model has no MLP parameters, and it keeps the model's contracts: packed == each sequence alone, prefill +
decode == the full forward, save/load round trip, fused decoding, and a Llama baseline of the same shape."""

import pytest
import torch

from gsa.models import GSAConfig, GSAForCausalLM
from gsa.train.model import build_model

TOL = dict(atol=1e-9, rtol=1e-9)  # float64; the compared paths differ in summation order only


def mixer_only(**overrides) -> GSAForCausalLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_heads=2, num_slots=5, use_short_conv=True,
               intermediate_size=0)
    return GSAForCausalLM(GSAConfig(**{**cfg, **overrides})).double().eval()


def test_no_mlp_parameters_and_fewer_than_with_one():
    m = mixer_only()
    assert all(b.mlp is None and b.mlp_norm is None for b in m.model.layers)
    assert not any("mlp" in n for n, _ in m.named_parameters())
    with_mlp = mixer_only(intermediate_size=64)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in with_mlp.parameters())


def test_packed_and_decode_match_the_full_forward():
    m = mixer_only()
    a, b = torch.randint(3, 60, (11,)), torch.randint(3, 60, (6,))
    with torch.no_grad():
        packed = m(torch.cat([a, b])[None], cu_seqlens=torch.tensor([0, 11, 17])).logits[0]
        torch.testing.assert_close(packed[:11], m(a[None]).logits[0], **TOL)
        torch.testing.assert_close(packed[11:], m(b[None]).logits[0], **TOL)
        full = m(a[None]).logits[0]
        out = m(a[None, :7], use_cache=True)
        steps = [out.logits[0]]
        for t in range(7, 11):
            steps.append(m(a[None, t:t + 1], past_key_values=out.past_key_values).logits[0])
    torch.testing.assert_close(torch.cat(steps), full, **TOL)


def test_save_load_and_fused_generate(tmp_path):
    m = mixer_only()
    ids = torch.randint(3, 60, (2, 5))
    out = m.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    m.save_pretrained(tmp_path)
    back = GSAForCausalLM.from_pretrained(tmp_path).double().eval()
    assert back.config.intermediate_size == 0 and back.model.layers[0].mlp is None
    back.fuse_projections()  # no MLP to fuse: must not fail
    torch.testing.assert_close(back.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0), out,
                               rtol=0, atol=0)


def test_refuses_a_negative_width():
    with pytest.raises(ValueError, match="intermediate_size"):
        GSAConfig(hidden_size=32, num_heads=2, intermediate_size=-1)


def test_llama_baseline_without_mlp_trains():
    """The trainer's Llama baseline with intermediate_size = 0: transformers' MLP of width 0 outputs zeros, so the
    block is attention alone, as the GSA model's."""
    torch.manual_seed(0)
    m = build_model({"type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 0}, 60)
    ids = torch.randint(3, 60, (2, 9))
    m(ids, labels=ids).loss.backward()
    block = m.model.layers[0]
    assert block.mlp.down_proj.weight.numel() == 0
    assert block.self_attn.q_proj.weight.grad.abs().sum() > 0
