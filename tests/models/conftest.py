"""Tiny GSA models for the model tests (d = 32, 2 layers, vocab 101: milliseconds per forward on a CPU)."""

import pytest
import torch

from gsa.models import GSAConfig, GSAForCausalLM

TINY = dict(
    vocab_size=101, hidden_size=32, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=8,
    intermediate_size=64, gate_logit_normalizer=4.0, use_short_conv=True, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)


def tiny_config(**overrides) -> GSAConfig:
    return GSAConfig(**{**TINY, **overrides})


@pytest.fixture
def make_model():
    """make_model(dtype=torch.float64, seed=0, **config overrides) -> an eval-mode GSAForCausalLM."""

    def make(dtype=torch.float64, seed=0, **overrides) -> GSAForCausalLM:
        torch.manual_seed(seed)
        model = GSAForCausalLM(tiny_config(**overrides)).to(dtype).eval()
        if model.config.use_short_conv:
            # Wider than the default init so that a convolution tap leaking across a boundary would show.
            for block in model.model.layers:
                for conv in (block.attn.q_conv, block.attn.k_conv, block.attn.v_conv):
                    torch.nn.init.normal_(conv.weight, std=0.5)
        return model

    return make


def left_pad(seqs: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D id tensors -> (input_ids [B, T], attention_mask [B, T]) padded on the left."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :] = s
        mask[i, T - len(s) :] = 1
    return ids, mask
