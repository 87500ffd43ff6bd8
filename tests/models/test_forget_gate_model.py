"""GSAConfig.forget_gate reaches every layer; ABC models train and generate without a cache, and say why not with."""

import pytest
import torch

from gsa.models import GSAConfig, GSAForCausalLM


def model(forget_gate):
    torch.manual_seed(0)
    cfg = GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_heads=2, num_slots=4,
                    forget_gate=forget_gate)
    return GSAForCausalLM(cfg).eval()


@pytest.mark.parametrize("forget_gate", ["fixed", "none"])
def test_every_layer_uses_the_gate_and_loss_backpropagates(forget_gate):
    m = model(forget_gate)
    assert all(b.attn.forget_gate == forget_gate for b in m.model.layers)
    ids = torch.randint(0, 50, (1, 30))
    m(ids, labels=ids, cu_seqlens=torch.tensor([0, 7, 30])).loss.backward()
    attn = m.model.layers[0].attn
    gate = attn.f_logit if forget_gate == "fixed" else attn.f_proj.weight
    assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_abc_generates_without_a_cache_only():
    m = model("none")
    ids = torch.randint(0, 50, (1, 5))
    out = m.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0)
    assert out.shape == (1, 9)
    with pytest.raises(ValueError, match="full sequences only"):
        m.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
