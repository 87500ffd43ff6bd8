"""generate(): the cached recurrent path against recomputation, padding, sampling and beam search."""

import pytest
import torch

from conftest import left_pad
from gsa.models import GSACache


def _prompts():
    torch.manual_seed(5)
    return [torch.randint(3, 101, (n,)) for n in (7, 2, 5)]


def _greedy(model, ids, mask, **kw):
    return model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                          eos_token_id=None, **kw)


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_cached_greedy_equals_recomputation(make_model, use_short_conv):
    """The state path (prefill + one-token steps) picks the same tokens as re-running the whole sequence."""
    model = make_model(use_short_conv=use_short_conv)
    ids, mask = left_pad(_prompts())
    cached = _greedy(model, ids, mask)
    recomputed = _greedy(model, ids, mask, use_cache=False)
    assert cached.shape == (3, ids.shape[1] + 8)
    assert torch.equal(cached, recomputed)


def test_left_padded_batch_generates_what_each_prompt_generates_alone(make_model):
    model = make_model()
    prompts = _prompts()
    ids, mask = left_pad(prompts)
    batch = _greedy(model, ids, mask)[:, ids.shape[1] :]
    for i, p in enumerate(prompts):
        alone = _greedy(model, p[None], torch.ones(1, len(p), dtype=torch.long))[:, len(p) :]
        assert torch.equal(batch[i : i + 1], alone)


def test_generate_returns_a_gsa_cache_with_per_layer_counts(make_model):
    model = make_model()
    ids, mask = left_pad(_prompts())
    out = _greedy(model, ids, mask, return_dict_in_generate=True)
    cache = out.past_key_values
    assert isinstance(cache, GSACache)
    # The last generated token is never fed back, so each layer consumed prompt + 7 tokens.
    assert [cache.get_seq_length(i) for i in range(2)] == [ids.shape[1] + 7] * 2
    assert cache.batch_size == 3


def test_sampling_with_a_seed_is_reproducible(make_model):
    model = make_model(dtype=torch.float32)
    ids, mask = left_pad(_prompts())

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=1.3,
                              top_k=50, top_p=0.95, pad_token_id=0, eos_token_id=None)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_beam_search_reorders_the_cache(make_model):
    model = make_model()
    ids, mask = left_pad(_prompts())
    cached = _greedy(model, ids, mask, num_beams=3)
    recomputed = _greedy(model, ids, mask, num_beams=3, use_cache=False)
    assert torch.equal(cached, recomputed)


def test_num_return_sequences_expands_the_batch(make_model):
    model = make_model(dtype=torch.float32)
    ids, mask = left_pad(_prompts())
    torch.manual_seed(0)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=True, num_return_sequences=2,
                         pad_token_id=0, eos_token_id=None)
    assert out.shape == (6, ids.shape[1] + 4)
    assert torch.equal(out[0::2, : ids.shape[1]], ids) and torch.equal(out[1::2, : ids.shape[1]], ids)


def test_assisted_generation_is_refused(make_model):
    model = make_model()
    ids = torch.randint(3, 101, (1, 4))
    with pytest.raises(ValueError, match="stateful"):
        model.generate(ids, assistant_model=make_model(), max_new_tokens=2)
