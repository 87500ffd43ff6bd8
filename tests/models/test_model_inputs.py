"""Bad input to the model and the layer: refused by name before any layer runs (found by an audit of raw errors:
embedding IndexErrors, an AttributeError from the convolution, a half-updated cache)."""

import pytest
import torch

from gsa.models import GSACache
from gsa.nn import GatedSlotAttention, GSAState


def test_token_ids_and_labels(make_model):
    model = make_model(dtype=torch.float32)
    V = model.config.vocab_size
    ids = torch.randint(3, V, (2, 5))
    for bad, error, message in ((torch.tensor([[5, V]]), ValueError, rf"input_ids must hold ids in \[0, vocab_size = "
                                 rf"{V}\), got \[{V}\]"),
                                (torch.tensor([[5, -1]]), ValueError, r"got \[-1\]"),
                                (torch.ones(1, 2), TypeError, "input_ids must be an integer tensor of token ids, got "
                                 "torch.float32"),
                                ([[1, 2]], ValueError, r"input_ids must be a \[B, T\] tensor, got list")):
        with pytest.raises(error, match=message):
            model(bad)
    labels = ids.clone()
    labels[0, 0] = -100  # ignored: fine
    assert model(ids, labels=labels).loss.isfinite()
    labels[1, 2] = V + 3
    with pytest.raises(ValueError, match=rf"labels must hold ids in \[0, vocab_size = {V}\) or -100, got \[{V + 3}\]"):
        model(ids, labels=labels)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        model(ids, labels=ids.float())
    for bad in (-1, 1.5):  # -1 had silently meant every position
        with pytest.raises(ValueError, match=f"logits_to_keep must be an int >= 0 .*got {bad!r}"):
            model(ids, logits_to_keep=bad)
    assert model(ids, logits_to_keep=2).logits.shape == (2, 2, V)


def test_cache_and_use_cache(make_model):
    model = make_model(dtype=torch.float32)
    ids = torch.randint(3, 50, (1, 4))
    short = GSACache(1)
    with pytest.raises(ValueError, match=r"past_key_values holds 1 layers, the model has 2: make it with GSACache\(2\)"):
        model(ids, past_key_values=short, use_cache=True)
    assert short.state(0) is None  # refused before layer 0 wrote its state
    for bad in (0, "yes"):
        with pytest.raises(TypeError, match=f"use_cache must be a bool or None, got {bad!r}"):
            model(ids, use_cache=bad)


def test_layer_inputs():
    layer = GatedSlotAttention(32, num_heads=4, num_slots=8, use_short_conv=True)
    x = torch.randn(1, 6, 32)
    with pytest.raises(ValueError, match=r"hidden_states must be \[B, T, 32\], got \(6, 32\)"):
        layer(x[0])
    with pytest.raises(TypeError, match="hidden_states must have the layer's dtype torch.float32"):
        layer(x.double())
    with pytest.raises(TypeError, match="state must be a GSAState \\(or None\\), got tuple"):
        layer(x, state=(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)))
    with pytest.raises(TypeError, match="cu_seqlens must be a 1-D integer torch.Tensor, got list"):
        layer(x, cu_seqlens=[0, 3, 6])  # had reached the convolution: AttributeError
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the input's dtype is autocast's business
        assert layer(x.bfloat16())[0].shape == (1, 6, 32)
    assert isinstance(layer(x, output_state=True)[1], GSAState)


@pytest.mark.parametrize("make, message", [
    (lambda: GSACache(2.5), "GSACache num_layers must be a positive int, got 2.5"),
    (lambda: GSACache("2"), "GSACache num_layers must be a positive int, got '2'"),
    (lambda: GSACache(0), "GSACache num_layers must be a positive int, got 0"),
])
def test_cache_constructor(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_short_convolution_constructor():
    from gsa.nn import ShortConvolution

    with pytest.raises(ValueError, match="ShortConvolution channels must be a positive int, got 2.5"):
        ShortConvolution(2.5)
    with pytest.raises(ValueError, match="ShortConvolution kernel_size must be an int >= 2, got 3.5"):
        ShortConvolution(8, 3.5)


def test_block_pieces_name_a_wrong_width():
    from gsa.nn import ShortConvolution, SwiGLU

    with pytest.raises(ValueError, match=r"ShortConvolution expects x \[B, T, 8\], got shape \(6, 8\)"):
        ShortConvolution(8)(torch.randn(6, 8))
    with pytest.raises(ValueError, match=r"SwiGLU expects x \[\.\.\., 16\], got shape \(2, 3, 12\)"):
        SwiGLU(16, 32)(torch.randn(2, 3, 12))
