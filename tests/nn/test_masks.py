"""Padding masks (gsa.nn.masks): what the layer and the model take, and the two silent misreadings they refuse
(additive masks; padding between tokens, or before a returned state, in a layer with a short convolution).

Equivalences in float64 (paths differ by summation order only, ~1e-15)."""

import pytest
import torch

from gsa.models import GSAConfig, GSAForCausalLM
from gsa.nn import GatedSlotAttention
from gsa.nn.masks import check_contiguous_tokens, padding_mask

TOL = dict(atol=1e-10, rtol=1e-10)


def make_layer(**kw) -> GatedSlotAttention:
    torch.manual_seed(0)
    layer = GatedSlotAttention(**{**dict(hidden_size=32, num_heads=4, num_slots=6, gate_logit_normalizer=4.0),
                                  **kw}).double()
    if layer.use_short_conv:  # far from identity-like, so that a misread tap would show
        for conv in (layer.q_conv, layer.k_conv, layer.v_conv):
            torch.nn.init.normal_(conv.weight, std=0.5)
    return layer


def test_padding_mask_takes_zeros_and_ones_of_any_real_dtype():
    want = torch.tensor([[False, True, True], [True, True, True]])
    for dtype in (torch.bool, torch.int64, torch.int32, torch.uint8, torch.float32, torch.bfloat16):
        got = padding_mask(want.to(dtype), 2, 3)
        assert got.dtype == torch.bool and torch.equal(got, want)


@pytest.mark.parametrize("mask, error, message", [
    (torch.tensor([[0.0, float("-inf"), 0.0]]), ValueError, r"1 \(token\) and 0 \(padding\) only, got also \[-inf\]"),
    (torch.tensor([[0.0, -1e9, 0.0]]), ValueError, "an additive mask"),
    (torch.tensor([[1, 2, 1]]), ValueError, r"got also \[2\]"),
    (torch.tensor([[0.5, 1.0, 1.0]]), ValueError, r"got also \[0.5\]"),
    (torch.zeros(1, 3), ValueError, "floating mask of zeros only"),
    (torch.ones(1, 3, dtype=torch.complex64), TypeError, "complex64"),
    ([[1, 1, 1]], TypeError, "must be a tensor, got list"),
    (torch.ones(1, 4), ValueError, r"must be \[B, T\] = \(1, 3\), got \(1, 4\)"),
])
def test_padding_mask_refuses_what_it_could_misread(mask, error, message):
    with pytest.raises(error, match=message):
        padding_mask(mask, 1, 3)
    assert padding_mask(torch.zeros(1, 3, dtype=torch.long), 1, 3).sum() == 0  # an integer mask of zeros: no tokens


def test_contiguous_tokens_rule():
    m = torch.tensor
    check_contiguous_tokens(m([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]).bool(), returns_state=True)  # left padding
    check_contiguous_tokens(m([[1, 1, 0, 0], [0, 1, 1, 0]]).bool(), returns_state=False)  # right / both sides
    with pytest.raises(ValueError, match="row 1 has padding between tokens"):
        check_contiguous_tokens(m([[1, 1, 1, 1], [1, 0, 0, 1]]).bool(), returns_state=False)
    with pytest.raises(ValueError, match="row 0 ends in padding while a state is returned"):
        check_contiguous_tokens(m([[1, 1, 0, 0]]).bool(), returns_state=True)
    check_contiguous_tokens(m([[0]]).bool(), returns_state=True)  # one position: nothing to check


def test_layer_without_convolution_reads_a_gap_exactly():
    """Slots (and no convolution) skip padded positions exactly: a row with padding between its tokens gives each
    token the output of the sequence without the padding, and the same final state."""
    layer = make_layer()
    x = torch.randn(1, 7, 32, dtype=torch.float64)
    gapped = torch.cat([x[:, :3], torch.randn(1, 2, 32, dtype=torch.float64), x[:, 3:]], 1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 1, 1]])
    y, state = layer(gapped, attention_mask=mask, output_state=True)
    y_ref, state_ref = layer(x, output_state=True)
    torch.testing.assert_close(y[:, mask[0].bool()], y_ref, **TOL)
    torch.testing.assert_close(state.hk, state_ref.hk, **TOL)
    torch.testing.assert_close(state.hv, state_ref.hv, **TOL)


def test_layer_with_convolution_refuses_a_gap_and_a_trailing_pad_before_a_state():
    layer = make_layer(use_short_conv=True)
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="row 0 has padding between tokens"):
        layer(x, attention_mask=torch.tensor([[1, 1, 0, 1, 1, 1], [1] * 6]))
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    with pytest.raises(ValueError, match="row 0 ends in padding while a state is returned"):
        layer(x, attention_mask=right, output_state=True)
    # right padding without a state: the real tokens' outputs are those of the unpadded row
    y, _ = layer(x, attention_mask=right)
    torch.testing.assert_close(y[0, :4], layer(x[:1, :4])[0][0], **TOL)
    # left padding with a state: continuing from it equals the whole unpadded sequence
    left = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    _, state = layer(x, attention_mask=left, output_state=True)
    nxt = torch.randn(2, 3, 32, dtype=torch.float64)
    y_next, _ = layer(nxt, state=state)
    torch.testing.assert_close(y_next[0], layer(torch.cat([x[:1, 2:], nxt[:1]], 1))[0][0, 4:], **TOL)


def test_model_refuses_right_padded_prompts_before_a_cache_and_float_zero_masks():
    torch.manual_seed(0)
    model = GSAForCausalLM(GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_heads=4, num_slots=8,
                                     intermediate_size=64, use_short_conv=True)).eval()
    ids = torch.randint(3, 50, (1, 7))
    right = torch.tensor([[1] * 5 + [0, 0]])
    with pytest.raises(ValueError, match="ends in padding while a state is returned"):
        model.generate(ids, attention_mask=right, max_new_tokens=2, do_sample=False)
    with pytest.raises(ValueError, match="floating mask of zeros only"):
        model(ids, attention_mask=torch.zeros(1, 7))
    with pytest.raises(ValueError, match="an additive mask"):
        model(ids, attention_mask=torch.full((1, 7), -1e9).triu())
    assert model(ids, attention_mask=right).logits.shape == (1, 7, 50)  # no cache: right padding is exact
