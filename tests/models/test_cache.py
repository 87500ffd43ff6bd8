"""GSACache on its own: per-layer counts, batch reshaping, and what it refuses."""

import pytest
import torch
from transformers import DynamicCache

from gsa.models import GSACache


def test_token_counts_are_per_layer(make_model):
    model = make_model()
    cache = GSACache(2)
    assert cache.get_seq_length(0) == 0 and cache.state(1) is None and cache.batch_size == -1
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    _, state = model.model.layers[0].attn(x, output_state=True)
    cache.update_state(0, state, 5)
    assert [cache.get_seq_length(0), cache.get_seq_length(1)] == [5, 0]
    assert cache.state(0) is state and cache.batch_size == 2
    assert state.hk.shape == (2, 2, 8, 8) and state.hk.dtype == torch.float64  # [B, H, K, M]
    assert state.hv.shape == (2, 2, 8, 8)  # [B, H, M, V]
    assert [c.shape for c in state.conv] == [(2, 3, 32), (2, 3, 16), (2, 3, 16)]  # [B, W - 1, C] for q, k, v
    cache.reset()
    assert cache.get_seq_length(0) == 0 and cache.state(0) is None


def test_batch_select_and_repeat_interleave_match_a_reshaped_batch(make_model):
    """Decoding from a repeated / reordered cache equals decoding the correspondingly repeated / reordered batch."""
    model = make_model()
    prompt = torch.randint(3, 101, (2, 5))
    nxt = torch.randint(3, 101, (4, 1))
    with torch.no_grad():
        cache = model(prompt, use_cache=True).past_key_values
        cache.batch_repeat_interleave(2)  # rows 0, 0, 1, 1
        cache.batch_select_indices(torch.tensor([2, 0, 3, 1]))  # rows 1, 0, 1, 0
        got = model(nxt, past_key_values=cache).logits
        rows = torch.tensor([1, 0, 1, 0])
        want = model(torch.cat([prompt[rows], nxt], 1)).logits[:, -1:]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_refusals(make_model):
    model = make_model()
    ids = torch.randint(3, 101, (1, 4))
    cache = model(ids, use_cache=True).past_key_values
    with pytest.raises(NotImplementedError, match="cropped"):
        cache.crop(1)
    assert not cache.is_croppable and not cache.is_compileable
    with pytest.raises(TypeError, match="GSACache"):
        model(ids, past_key_values=DynamicCache())
    with pytest.raises(ValueError, match="state holds 1 sequences"):
        model(torch.randint(3, 101, (2, 1)), past_key_values=cache)
    with pytest.raises(IndexError):
        cache.state(2)
