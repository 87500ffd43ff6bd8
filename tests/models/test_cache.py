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


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_inplace_decode_advances_the_same_buffers(make_model, use_short_conv):
    """With inplace_decode the state tensors keep their storage across steps, and the logits are unchanged."""
    model = make_model(dtype=torch.float32, use_short_conv=use_short_conv)
    prompt = torch.randint(3, 101, (2, 9))
    steps = torch.randint(3, 101, (2, 4))
    with torch.no_grad():
        ref = model(prompt, use_cache=True)
        ref_logits = [model(steps[:, t : t + 1], past_key_values=ref.past_key_values).logits for t in range(4)]
        cache = GSACache(2, inplace_decode=True)
        model(prompt, past_key_values=cache)
        state = cache.state(1)
        buffers = [state.hk, state.hv] + (list(state.conv) if use_short_conv else [])
        ptrs = [b.data_ptr() for b in buffers]
        for t in range(4):
            logits = model(steps[:, t : t + 1], past_key_values=cache).logits
            torch.testing.assert_close(logits, ref_logits[t], atol=1e-6, rtol=1e-6)  # same float32 computation
    assert cache.state(1) is state and [b.data_ptr() for b in buffers] == ptrs
    assert cache.get_seq_length(1) == 13
    torch.testing.assert_close(state.hk, ref.past_key_values.state(1).hk, atol=1e-6, rtol=1e-6)


def test_inplace_decode_with_generate(make_model):
    model = make_model(dtype=torch.float32)
    ids = torch.randint(3, 101, (2, 5))
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0,
              eos_token_id=None)
    assert torch.equal(model.generate(ids, past_key_values=GSACache(2, inplace_decode=True), **kw),
                       model.generate(ids, **kw))


def test_inplace_decode_refuses_float64_states(make_model):
    model = make_model()  # float64: states are float64, the in-place op path is float32 only
    cache = GSACache(2, inplace_decode=True)
    ids = torch.randint(3, 101, (1, 3))
    with torch.no_grad():
        model(ids, past_key_values=cache)
        with pytest.raises(ValueError, match="float32"):
            model(ids[:, :1], past_key_values=cache)
