"""Forward semantics of GSAForCausalLM: left padding, packing, loss, and prefill + decode with the cache.

Equivalence tests run the model in float64: the compared paths (chunked vs token-by-token op, padded vs alone)
differ only in summation order, ~1e-14 relative; 1e-9 is far above that and far below a real bug (~1e-2).
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import left_pad

TOL = dict(atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("use_short_conv", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])  # right padding: e.g. an evaluation harness's batches
def test_padded_batch_equals_each_sequence_alone(make_model, use_short_conv, side):
    model = make_model(use_short_conv=use_short_conv)
    seqs = [torch.randint(3, 101, (n,)) for n in (9, 4, 1, 7)]
    ids, mask = left_pad(seqs)
    if side == "right":
        ids, mask = left_pad([s.flip(0) for s in seqs])
        ids, mask = ids.flip(1), mask.flip(1)
    ids[mask == 0] = torch.randint(3, 101, (int((mask == 0).sum()),))  # padding content must not matter
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            alone = model(s[None]).logits[0]
            torch.testing.assert_close(logits[i][mask[i].bool()], alone, **TOL)


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_packed_equals_each_sequence_alone(make_model, use_short_conv):
    model = make_model(use_short_conv=use_short_conv)
    seqs = [torch.randint(3, 101, (n,)) for n in (5, 1, 8, 3)]
    cu = torch.tensor([0, 5, 6, 14, 17])
    ids = torch.cat(seqs)[None]
    with torch.no_grad():
        out = model(ids, labels=ids, cu_seqlens=cu)
        alone = [model(s[None], labels=s[None]) for s in seqs]
    torch.testing.assert_close(out.logits[0], torch.cat([a.logits[0] for a in alone]), **TOL)
    # The packed loss is the token-weighted mean of the per-sequence losses (each predicts len - 1 tokens).
    weights = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.float64)
    per_seq = torch.stack([a.loss if len(s) > 1 else torch.zeros((), dtype=torch.float64) for a, s in zip(alone, seqs)])
    torch.testing.assert_close(out.loss.double(), (per_seq * weights).sum() / weights.sum(), **TOL)


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(make_model):
    model = make_model()
    ids = torch.randint(3, 101, (2, 8))
    labels = ids.clone()
    labels[0, 3] = -100
    labels[1, :2] = -100
    out = model(ids, labels=labels)
    want = F.cross_entropy(out.logits[:, :-1].reshape(-1, 101), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, want, **TOL)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_packed_training_backward(make_model):
    model = make_model(dtype=torch.float32).train()
    ids = torch.randint(3, 101, (1, 20))
    out = model(ids, labels=ids, cu_seqlens=torch.tensor([0, 7, 20], dtype=torch.int32))
    assert out.past_key_values is None  # no cache unless asked for
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_prefill_then_decode_equals_full_forward(make_model, use_short_conv):
    """Left-padded prefill, then one token at a time (and one 2-token chunk) through the cache == one forward."""
    model = make_model(use_short_conv=use_short_conv)
    seqs = [torch.randint(3, 101, (n,)) for n in (6, 3, 5)]
    prompt, mask = left_pad(seqs)
    cont = torch.randint(3, 101, (3, 5))
    ids = torch.cat([prompt, cont], 1)
    full_mask = torch.cat([mask, torch.ones_like(cont)], 1)
    with torch.no_grad():
        full = model(ids, attention_mask=full_mask).logits
        out = model(prompt, attention_mask=mask, use_cache=True)
        cache = out.past_key_values
        steps = [out.logits]
        for t, n in ((0, 1), (1, 1), (2, 2), (4, 1)):
            T = prompt.shape[1] + t + n
            out = model(cont[:, t : t + n], attention_mask=full_mask[:, :T], past_key_values=cache)
            assert out.past_key_values is cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1)[mask.new_ones(3, ids.shape[1]).bool() & full_mask.bool()],
                               full[full_mask.bool()], **TOL)
    assert [cache.get_seq_length(i) for i in range(2)] == [ids.shape[1]] * 2


def test_logits_to_keep_and_tuple_output(make_model):
    model = make_model()
    ids = torch.randint(3, 101, (2, 6))
    with torch.no_grad():
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
        as_tuple = model(ids, return_dict=False)
    torch.testing.assert_close(last, full[:, -1:], **TOL)  # a smaller matmul rounds differently
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], full, atol=0, rtol=0)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


def test_forward_errors(make_model):
    model = make_model()
    ids = torch.randint(3, 101, (2, 6))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(ids, cu_seqlens=torch.tensor([0, 6]))  # B must be 1
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 5))
    cache = model(ids, use_cache=True).past_key_values
    with pytest.raises(ValueError, match="cannot continue a cache"):
        model(ids[:1], cu_seqlens=torch.tensor([0, 6]), past_key_values=cache)
    with pytest.raises(ValueError, match="T_past = 6"):
        model(ids[:, :1], attention_mask=torch.ones(2, 8), past_key_values=cache)
    with pytest.raises(ValueError, match="use_cache=False"):
        model(ids[:, :1], past_key_values=cache, use_cache=False)
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=ids[:, :5])
    with pytest.raises(ValueError, match="input_ids"):
        model(ids[:, :0])


def test_float32_decode_is_as_accurate_as_the_full_forward(make_model):
    """In float32 (float32 states fed back between calls) the cached path stays within a small factor of the
    full forward's own float32 error, both measured against the float64 model: the paths only round differently."""
    model = make_model()
    seqs = [torch.randint(3, 101, (n,)) for n in (12, 5)]
    prompt, mask = left_pad(seqs)
    cont = torch.randint(3, 101, (2, 4))
    ids, full_mask = torch.cat([prompt, cont], 1), torch.cat([mask, torch.ones_like(cont)], 1)
    with torch.no_grad():
        truth = model(ids, attention_mask=full_mask).logits
        model32 = model.float()
        full32 = model32(ids, attention_mask=full_mask).logits
        out = model32(prompt, attention_mask=mask, use_cache=True)
        assert out.past_key_values.state(0).hk.dtype == torch.float32
        steps = [out.logits]
        for t in range(4):
            step_mask = full_mask[:, : prompt.shape[1] + t + 1]
            steps.append(model32(cont[:, t : t + 1], attention_mask=step_mask, past_key_values=out.past_key_values).logits)
    real = full_mask.bool()
    err_full = (full32.double() - truth)[real].abs().max()
    err_decode = (torch.cat(steps, 1).double() - truth)[real].abs().max()
    assert err_full < 1e-5  # float32 eps is 1.2e-7; logits are O(0.1) after a few dozen accumulations
    assert err_decode <= 4 * err_full + 1e-7, (err_decode, err_full)
