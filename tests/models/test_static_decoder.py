"""StaticDecoder (fixed-shape decoding over owned, in-place state buffers) gives the same tokens as generate()."""

import pytest
import torch

from gsa.models import GSAConfig, GSAForCausalLM, StaticDecoder
from gsa.models.decoding import sample_next


def tiny(use_short_conv=False, hybrid=False, **kw):
    """hybrid: window 4 + 1 sink summed with the slot memory (a nonzero share), so prompts overflow the window."""
    torch.manual_seed(0)
    if hybrid:
        kw.update(window_size=4, num_sink_tokens=1, rope_theta=100.0)
    cfg = GSAConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=8,
                    use_short_conv=use_short_conv, initializer_range=0.2, **kw)
    model = GSAForCausalLM(cfg).eval()
    if hybrid:
        with torch.no_grad():
            for block in model.model.layers:
                block.attn.memory_scale.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("use_short_conv,hybrid", [(False, False), (True, False), (False, True)])
def test_greedy_matches_generate_with_left_padding(use_short_conv, hybrid):
    model = tiny(use_short_conv, hybrid)
    ids = torch.randint(3, 97, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, :1] = 0
    ids = ids.masked_fill(mask == 0, 0)
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    dec = StaticDecoder(model, batch_size=3)
    got = dec.generate(ids, attention_mask=mask, max_new_tokens=20)
    assert torch.equal(got, ref)
    # a second prompt reuses the same buffers (a captured graph would stay valid)
    buffers = [t.data_ptr() for i in range(2) for t in (dec.cache.state(i).hk, dec.cache.state(i).hv)]
    ids2 = torch.randint(3, 97, (3, 5))
    assert torch.equal(dec.generate(ids2, max_new_tokens=7),
                       model.generate(ids2, max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=0))
    assert buffers == [t.data_ptr() for i in range(2) for t in (dec.cache.state(i).hk, dec.cache.state(i).hv)]


def assert_steps_match_full_forward(model, T, prefix=10):
    """Prefill `prefix` tokens, then one step a token up to T: each step's logits equal the full forward's."""
    ids = torch.randint(0, 97, (2, T))
    with torch.no_grad():
        full = model(ids).logits.float()
    dec = StaticDecoder(model, batch_size=2)
    logits = [dec.prefill(ids[:, :prefix])]
    for t in range(prefix, T):
        logits.append(dec.step(ids[:, t]))
    torch.testing.assert_close(torch.stack(logits[:-1], 1), full[:, prefix - 1 : T - 1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"hybrid": True}, {"gate_bias": True}], ids=["plain", "hybrid", "gate_bias"])
def test_step_logits_match_full_forward(kw):
    """gate_bias: the fused q|k|v|f product of a decode step carries W_f's bias."""
    assert_steps_match_full_forward(tiny(**kw), 30)


def test_eos_pads_finished_sequences_and_stops_early():
    model = tiny()
    ids = torch.randint(3, 97, (2, 6))
    free = StaticDecoder(model, 2).generate(ids, max_new_tokens=12)
    eos = int(free[0, 6 + 2])  # the third token sequence 0 produces
    got = StaticDecoder(model, 2).generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=1,
                                           stop_check_every=1)
    new = got[:, 6:]
    assert new[0, 2] == eos and (new[0, 3:] == 1).all()
    ref = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=1)
    assert torch.equal(got, ref[:, : got.shape[1]])


def test_sampling_is_seeded_and_respects_top_k():
    logits = torch.randn(4, 50)
    a = sample_next(logits, True, 0.7, top_k=5, generator=torch.Generator().manual_seed(1))
    b = sample_next(logits, True, 0.7, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    top5 = torch.topk(logits, 5).indices
    assert all(a[i] in top5[i] for i in range(4))


def test_sampling_distribution_matches_softmax_with_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits.expand(4000, -1), True, 1.0, top_p=0.8, generator=gen)
                         for _ in range(5)]).flatten()
    p = torch.softmax(logits[0], 0)
    keep = p.cumsum(0) - p <= 0.8  # tokens 0..2 (mass before token 3 is above 0.8)
    expected = torch.where(keep, p, torch.zeros_like(p))
    expected = expected / expected.sum()
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    assert freq[~keep].sum() == 0
    torch.testing.assert_close(freq, expected.double(), atol=0.015, rtol=0)


def test_bad_use_raises():
    model = tiny()
    dec = StaticDecoder(model, 2)
    with pytest.raises(RuntimeError, match="needs a prefill"):
        dec.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must be \[2, T\]"):
        dec.prefill(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="CUDA device"):
        StaticDecoder(model, 2, cuda_graph=True)
    for bad in (0, 2.5, "2"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad!r}"):
            StaticDecoder(model, bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(do_sample=True, top_p=-0.5), r"top_p must be a number in \(0, 1\] \(or None\), got -0.5"),
    (dict(do_sample=True, top_p=1.5), "top_p must be a number in"),
    (dict(do_sample=True, top_k=0), "top_k must be a positive int, got 0"),
    (dict(do_sample=True, temperature=0.0), "temperature must be a positive finite number, got 0.0"),
    (dict(do_sample=True, temperature=float("nan")), "temperature must be a positive finite number"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be a positive int, got 2.5"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive int, got 0"),
    (dict(stop_check_every=0), "stop_check_every must be a positive int, got 0"),
])
def test_generate_refuses_arguments_it_would_misuse(kwargs, message):
    """Each is refused by name before the prefill: top_p = -0.5 had made every logit -inf and returned token 0 at
    every step, top_k = 0 a raw size-mismatch error, stop_check_every = 0 a ZeroDivisionError."""
    dec = StaticDecoder(tiny(), 1)
    with pytest.raises(ValueError, match=message):
        dec.generate(torch.ones(1, 3, dtype=torch.long), **{"max_new_tokens": 4, **kwargs})
    assert dec.cache is None  # nothing ran


@pytest.mark.parametrize("use_short_conv,hybrid", [(False, False), (True, False), (False, True)])
def test_packed_prompts_generate_like_each_prompt_alone(use_short_conv, hybrid):
    """Prompts of lengths 1, 3 and 70 packed without padding (cu_seqlens) decode as each would alone."""
    model = tiny(use_short_conv, hybrid)
    prompts = [torch.randint(3, 97, (1, n)) for n in (1, 3, 70)]
    cu = torch.tensor([0, 1, 4, 74])
    got = StaticDecoder(model, batch_size=3).generate(torch.cat(prompts, 1), cu_seqlens=cu, max_new_tokens=9)
    for n, p in enumerate(prompts):
        ref = model.generate(p, max_new_tokens=9, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert torch.equal(got[n], ref[0, p.shape[1]:]), n


@pytest.mark.gpu
@pytest.mark.parametrize("use_short_conv,hybrid,real", [(False, False, False), (True, False, False),
                                                        (False, True, False), (False, False, True)])
def test_gpu_compiled_cuda_graph_decoder_matches_generate(use_short_conv, hybrid, real):
    """The fast path as `gsa generate --compile` runs it (compiled step, CUDA graph, fused recurrent kernel) gives
    generate()'s greedy tokens, float32 on the GPU, for two prompts through the same captured graph. real: the
    layers of GSA-1.3B (d 2048, 4 heads of K = V = 512, 64 slots, MLP 5632), two of them."""
    torch.manual_seed(0)
    size = dict(hidden_size=2048, num_hidden_layers=2, num_heads=4, num_slots=64, intermediate_size=5632) if real \
        else dict(hidden_size=256, num_hidden_layers=3, num_heads=4, num_kv_heads=2, num_slots=32)
    cfg = GSAConfig(vocab_size=512, use_short_conv=use_short_conv, initializer_range=0.1, **size,
                    **(dict(window_size=8, num_sink_tokens=2) if hybrid else {}))
    model = GSAForCausalLM(cfg).cuda().eval()
    if hybrid:
        with torch.no_grad():
            for block in model.model.layers:
                block.attn.memory_scale.uniform_(0.5, 1.5)
    dec = StaticDecoder(model, batch_size=4, compile=True, cuda_graph=True)
    for T in (37, 5):
        ids = torch.randint(3, 512, (4, T), device="cuda")
        ref = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert torch.equal(dec.generate(ids, max_new_tokens=24), ref)


@pytest.mark.gpu
def test_gpu_bf16_batch1_step_at_real_sizes_within_2x_of_cublas(monkeypatch):
    """The batch-1 bf16 step as the benchmark runs it (GSA-1.3B's layer shapes, two layers): the one-token GEMV
    kernel and programmatic dependent launch in a compiled
    CUDA-graph step. Teacher-forced for 16 tokens, each step's
    logits against a float32 copy of the model, no worse than ~2x the same step with cuBLAS products."""
    from gsa.ops.triton.settings import SETTINGS
    import gsa.ops.triton.gemv as gemv

    calls = []
    real_gemv = gemv._gemv
    monkeypatch.setattr(gemv, "_gemv", lambda *a: calls.append(1) or real_gemv(*a))
    torch.manual_seed(0)
    cfg = GSAConfig(vocab_size=1024, hidden_size=2048, num_hidden_layers=2, num_heads=4, num_slots=64,
                    intermediate_size=5632, initializer_range=0.02)
    ref_model = GSAForCausalLM(cfg).cuda().eval()
    ids = torch.randint(3, 1024, (1, 64 + 16), device="cuda")
    with torch.no_grad():
        truth = ref_model(ids).logits[0, 63:-1].float()  # the logits each of the 16 steps must produce
    errors = {}
    for products in ({"qkvf", "o", "gate_up"}, set()):
        calls.clear()
        monkeypatch.setattr(SETTINGS, "decode_gemv", frozenset(products))
        model = GSAForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
        model.load_state_dict(ref_model.state_dict())
        dec = StaticDecoder(model, batch_size=1, compile=True, cuda_graph=True)
        got = [dec.prefill(ids[:, :64])]
        for t in range(64, 64 + 15):
            got.append(dec.step(ids[:, t]).clone())
        got = torch.cat(got)
        assert torch.isfinite(got).all()
        errors[len(products)] = ((got - truth).norm() / truth.norm()).item()
        assert bool(calls) == bool(products)  # the kernel ran (in the captured step) exactly when asked for
    assert errors[3] <= 2 * errors[0] + 1e-6, errors


@pytest.mark.parametrize("overrides", [{}, {"forget_gate": "fixed"}, {"qkv_bias": True, "use_short_conv": True}])
def test_fused_projections_same_outputs_no_extra_memory(make_model, overrides):
    model = make_model(**overrides)
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        ref = model(ids).logits
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.fuse_projections()
    attn, mlp = model.model.layers[0].attn, model.model.layers[0].mlp
    fused = attn._fused.weight
    assert attn.q_proj.weight.data_ptr() == fused.data_ptr()  # views of the fused matrix: no copy kept
    assert attn.v_proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    assert mlp.up_proj.weight.untyped_storage().data_ptr() == mlp._fused.weight.untyped_storage().data_ptr()
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())  # and same values, same names
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-12, atol=1e-12)
    model.fuse_projections()  # fusing again keeps the same matrices (no second copy of the weights)
    assert attn._fused.weight is fused
    fused_weights = {id(b.attn._fused.weight) for b in model.model.layers} | {id(b.mlp._fused.weight)
                                                                             for b in model.model.layers}
    calls = []
    real_linear = torch.nn.functional.linear

    def counting_linear(x, w, b=None):
        calls.append(id(w) in fused_weights)
        return real_linear(x, w, b)

    try:  # a long prefill keeps the separate products (their outputs can be freed one by one)
        torch.nn.functional.linear = counting_linear
        with torch.no_grad():
            model(torch.randint(0, 101, (1, 300)))
            assert not any(calls)
            calls.clear()
            model(ids)
            assert sum(calls) == 4  # two layers, attention and MLP
    finally:
        torch.nn.functional.linear = real_linear
    # with autograd on, the separate Linears run and get gradients; an in-place update reaches the fused matrix
    model(ids).logits.sum().backward()
    assert attn.q_proj.weight.grad is not None and mlp.gate_proj.weight.grad is not None
    with torch.no_grad():
        attn.k_proj.weight.mul_(2.0)
        torch.testing.assert_close(attn._fused.weight[attn.q_proj.out_features:][: attn.k_proj.out_features],
                                   attn.k_proj.weight)
        attn.k_proj.weight.mul_(0.5)
    # casting unfuses (the parameters get new storage) and keeps the outputs
    model.float()
    assert attn._fused is None and mlp._fused is None
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_prefill_in_pieces_matches_one_piece(use_short_conv):
    """max_prefill_tokens bounds a prefill's activations: pieces of 3 positions carry the state (and convolution
    window) from one to the next, with left padding spanning the first pieces."""
    model = tiny(use_short_conv)
    ids = torch.randint(3, 97, (2, 17))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    whole = StaticDecoder(model, batch_size=2)
    pieces = StaticDecoder(model, batch_size=2, max_prefill_tokens=6)
    torch.testing.assert_close(pieces.prefill(ids, mask), whole.prefill(ids, mask), rtol=1e-5, atol=1e-5)
    for i in range(2):
        for a, b in zip(pieces.cache.state(i).conv or (), whole.cache.state(i).conv or ()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pieces.cache.state(i).hk, whole.cache.state(i).hk, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pieces.cache.state(i).hv, whole.cache.state(i).hv, rtol=1e-5, atol=1e-5)
    token = ids[:, -1]
    torch.testing.assert_close(pieces.step(token), whole.step(token), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_prefill_tokens must be a positive int, got 0"):
        StaticDecoder(model, batch_size=2, max_prefill_tokens=0)
