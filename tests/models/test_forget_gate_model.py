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


def test_gate_bias_spreads_each_heads_slots_and_survives_save_load(tmp_path):
    """gate_bias: W_f's bias is linspace(-4, 4) over each head's slots after the model's init (which zeroes other
    biases), the loss reaches it, and a trained bias is loaded back as saved (not re-initialised). Decoding with it:
    test_static_decoder.py."""
    torch.manual_seed(0)
    cfg = GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=5,
                    gate_bias=True, qkv_bias=True)
    m = GSAForCausalLM(cfg)
    spread = torch.linspace(-4, 4, 5).repeat(2)
    for block in m.model.layers:
        torch.testing.assert_close(block.attn.f_proj.bias.detach(), spread, rtol=0, atol=0)
        assert block.attn.q_proj.bias.abs().sum() == 0
    ids = torch.randint(0, 50, (2, 24))
    m(ids, labels=ids).loss.backward()
    assert m.model.layers[0].attn.f_proj.bias.grad.abs().sum() > 0

    with torch.no_grad():
        m.model.layers[1].attn.f_proj.bias.add_(0.5)
    m.eval()
    full = m(ids).logits.detach()
    m.save_pretrained(tmp_path)
    back = GSAForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(back.model.layers[1].attn.f_proj.bias, spread + 0.5, rtol=0, atol=0)
    torch.testing.assert_close(back(ids).logits, full, rtol=0, atol=0)


def test_gate_bias_range_sets_every_slots_start_and_round_trips(tmp_path):
    """gate_bias_range (lo, hi): the bias is linspace(lo, hi) over each head's slots; (4, 4) starts every slot at the
    same slow decay. Saved in config.json and used again by a model made from the loaded config."""
    cfg = GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_heads=2, num_slots=3, gate_bias=True,
                    gate_bias_range=(4, 4))
    m = GSAForCausalLM(cfg)
    torch.testing.assert_close(m.model.layers[0].attn.f_proj.bias.detach(), torch.full((6,), 4.0), rtol=0, atol=0)
    cfg.save_pretrained(tmp_path)
    again = GSAForCausalLM(GSAConfig.from_pretrained(tmp_path))
    assert again.config.gate_bias_range == [4.0, 4.0]
    torch.testing.assert_close(again.model.layers[0].attn.f_proj.bias.detach(), torch.full((6,), 4.0), rtol=0, atol=0)
    cfg = GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_heads=1, num_slots=3, gate_bias=True,
                    gate_bias_range=[0, 2])
    torch.testing.assert_close(GSAForCausalLM(cfg).model.layers[0].attn.f_proj.bias.detach(),
                               torch.tensor([0.0, 1.0, 2.0]), rtol=0, atol=0)


def test_gate_bias_refusals():
    with pytest.raises(ValueError, match="gate_bias"):
        GSAConfig(gate_bias=True, forget_gate="fixed")
    with pytest.raises(ValueError, match="gate_bias"):
        GSAConfig(gate_bias=1)
    with pytest.raises(ValueError, match="gate_bias_range.*needs gate_bias=True"):
        GSAConfig(gate_bias_range=(4, 4))
    for bad in ([4, 1], [4], (0, float("inf")), "4,4", (True, 2)):
        with pytest.raises(ValueError, match="gate_bias_range"):
            GSAConfig(gate_bias=True, gate_bias_range=bad)
