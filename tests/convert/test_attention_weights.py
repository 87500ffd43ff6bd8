"""The teacher's attention weights, recomputed: the Hedgehog fit of learned feature maps, the attention spans of
heads built to have known spans, and the forget-gate biases set from them."""

import math

import pytest
import torch

from convert_teachers import make_teacher  # noqa: F401  (fixtures)
from gsa.convert import from_pretrained_transformer
from gsa.convert.attention_weights import (
    attention_spans,
    feature_map_loss,
    mean_distance,
    student_log_weights,
    teacher_log_weights,
)
from gsa.convert.distill import attention_transfer_parameters, teacher_attention_io
from gsa.convert.gate_init import MIN_SPAN, init_gates_from_spans, span_gate_logits


def _ids(seed, B=4, T=24):
    return torch.randint(3, 97, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_recomputed_weights_give_the_teachers_layer_output(make_teacher, arch):
    teacher = make_teacher(arch, initializer_range=0.2)
    ids = _ids(0)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    inputs, outputs, ropes = teacher_attention_io(teacher, ids, mask)
    for layer, x, out, rope in zip(teacher.model.layers, inputs, outputs, ropes):
        attn = layer.self_attn
        w = teacher_log_weights(attn, x, rope, mask).exp()  # [B, HQ, T, T]
        assert torch.all(w.triu(1) == 0) and torch.all(w[1, :, 5:, :5] == 0)  # causal; real queries skip padding
        v = attn.v_proj(x).view(*x.shape[:2], -1, attn.head_dim).transpose(1, 2).repeat_interleave(3, dim=1)
        y = attn.o_proj((w @ v).transpose(1, 2).reshape(*x.shape[:2], -1))
        real = mask.bool()
        torch.testing.assert_close(y[real], out[real], rtol=1e-5, atol=1e-5)


def test_feature_map_fit_lowers_the_kl_below_fixed_maps(make_teacher):
    """The learned maps start as the identity map; 30 Adam steps on one batch bring the KL to the teacher's weights
    below both fixed maps' on another batch, and only the maps move."""
    teacher = make_teacher("llama", initializer_range=0.2)
    student = from_pretrained_transformer(teacher, num_slots=8, feature_map="learned").train()
    swish = from_pretrained_transformer(teacher, num_slots=8, feature_map="swish")
    identity = from_pretrained_transformer(teacher, num_slots=8)
    params = attention_transfer_parameters(student, ("q_map", "k_map"))
    assert len(params) == 2 * 2 * 3  # layers x (q_map, k_map) x (w1, b1, w2)
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    train, held_out = _ids(1, B=8), _ids(2, B=8)
    with torch.no_grad():
        before = feature_map_loss(student, teacher, held_out).item()
        fixed = {name: feature_map_loss(m, teacher, held_out).item() for name, m in
                 (("identity", identity), ("swish", swish))}
    assert before == pytest.approx(fixed["identity"], abs=1e-6)  # identity maps at the start
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = feature_map_loss(student, teacher, train)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        after = feature_map_loss(student, teacher, held_out).item()
    assert losses[-1] < 0.8 * losses[0], losses
    assert after < 0.9 * min(fixed.values()), (after, fixed)
    assert all(torch.equal(p, frozen[n]) for n, p in student.named_parameters() if n in frozen)


def test_weights_stay_float32_under_bf16_autocast(make_teacher):
    """The trainer runs the loss under bf16 autocast (on GPUs by default): the weights recomputed from each layer's
    input must still be the float32 ones (autocast would otherwise run the projections and the q . k products in
    bf16, moving the weights by ~1e-2)."""
    teacher = make_teacher("llama", initializer_range=0.2)
    student = from_pretrained_transformer(teacher, num_slots=8, feature_map="learned")
    with torch.no_grad():
        for block in student.model.layers:
            block.attn.q_map.w2.normal_(std=0.3)
    ids = _ids(6, T=48)
    inputs, _, ropes = teacher_attention_io(teacher, ids, None)
    for t_layer, block, x, rope in zip(teacher.model.layers, student.model.layers, inputs, ropes):
        want_t = teacher_log_weights(t_layer.self_attn, x, rope).exp()
        want_s = student_log_weights(block.attn, x).exp()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_t = teacher_log_weights(t_layer.self_attn, x, rope).exp()
            got_s = student_log_weights(block.attn, x).exp()
        assert got_t.dtype == got_s.dtype == torch.float32
        torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_s, want_s, rtol=0, atol=1e-6)


def test_feature_map_loss_ignores_padding(make_teacher):
    teacher = make_teacher("llama", initializer_range=0.2)
    student = from_pretrained_transformer(teacher, num_slots=8, feature_map="learned")
    ids = _ids(3)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    base = feature_map_loss(student, teacher, ids, mask)
    ids2 = ids.clone()
    ids2[1, :5] = 7  # change only padded positions
    torch.testing.assert_close(feature_map_loss(student, teacher, ids2, mask), base)


def _span_teacher(make_teacher, c=20.0):
    """A Qwen2 teacher whose layers have q = k = c (all dims) in kv group 0, so RoPE puts every query's weight on
    itself (q_i . k_j = c^2 sum cos(theta (i - j)) peaks at i = j by ~130 logits), and q = 0 in group 1, so those
    heads spread evenly over the causal past."""
    teacher = make_teacher("qwen2")
    with torch.no_grad():
        for layer in teacher.model.layers:
            attn = layer.self_attn
            attn.q_proj.weight.zero_()
            attn.k_proj.weight.zero_()
            attn.q_proj.bias.zero_()
            attn.q_proj.bias[: 3 * attn.head_dim] = c
            attn.k_proj.bias.zero_()
            attn.k_proj.bias[: attn.head_dim] = c
    return teacher


def test_attention_spans_of_constructed_heads(make_teacher):
    teacher = _span_teacher(make_teacher)
    T = 24
    spans = attention_spans(teacher, _ids(4, B=2, T=T), sinks=0)
    assert spans.shape == (2, 2)
    assert torch.all(spans[:, 0] < 1e-6), spans  # reads the current token alone
    torch.testing.assert_close(spans[:, 1], torch.full((2,), (T - 1) / 4), rtol=1e-5, atol=1e-5)  # mean of i / 2
    # left padding: a row with 5 pads has real queries at 0..T-6 of its own; the mean runs over real queries
    ids = _ids(4, B=2, T=T)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    by_hand = (sum(i / 2 for i in range(T)) + sum(i / 2 for i in range(T - 5))) / (2 * T - 5)
    torch.testing.assert_close(attention_spans(teacher, ids, mask, sinks=0)[:, 1], torch.full((2,), by_hand),
                               rtol=1e-5, atol=1e-5)
    # the first 2 real tokens of each row left out: row i >= 2 puts 1 / (i + 1) on each key j = 2..i
    def moved_and_mass(n):  # n real queries
        return (sum((i - 2) * (i - 1) / 2 / (i + 1) for i in range(2, n)), sum((i - 1) / (i + 1) for i in range(2, n)))
    (m1, w1), (m2, w2) = moved_and_mass(T), moved_and_mass(T - 5)
    torch.testing.assert_close(attention_spans(teacher, ids, mask, sinks=2)[:, 1],
                               torch.full((2,), (m1 + m2) / (w1 + w2)), rtol=1e-5, atol=1e-5)
    # the batch in chunks (as the gate init runs it) pools the same sums: the same spans
    torch.testing.assert_close(attention_spans(teacher, ids, mask, sinks=2, batch_size=1),
                               attention_spans(teacher, ids, mask, sinks=2), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="sinks must be >= 0, got -1"):
        attention_spans(teacher, ids, sinks=-1)


def test_mean_distance_leaves_the_sinks_weight_out():
    """A head that parks 0.9 of every row on the first token and reads 0.1 from two tokens back (a sink head)
    measures ~i / 2 tokens with the sink counted and 2 without it; left padding moves the sink to the first real
    token."""
    T = 16
    w = torch.zeros(1, 1, T, T)
    w[0, 0, 0, 0] = w[0, 0, 1, 1] = w[0, 0, 2, 2] = 1.0  # rows 0, 1, 2: the first token / themselves
    for i in range(3, T):
        w[0, 0, i, 0], w[0, 0, i, i - 2] = 0.9, 0.1
    plain = sum(0.9 * i + 0.1 * 2 for i in range(3, T)) / T  # every row's mass is 1; rows 0-2 add distance 0
    torch.testing.assert_close(mean_distance(w, sinks=0), torch.tensor([plain]))
    # without the sink: rows 3.. keep 0.1 at distance 2, rows 1 and 2 their whole weight at distance 0, row 0 nothing
    torch.testing.assert_close(mean_distance(w, sinks=1), torch.tensor([0.2 * (T - 3) / (2 + 0.1 * (T - 3))]))
    assert mean_distance(w, sinks=T)[0] == 0  # no mass left: 0, not nan
    # the same head behind 3 pads, shifted by 3: the sink is the first real token
    pad = 3
    wp = torch.zeros(1, 1, T + pad, T + pad)
    wp[..., pad:, pad:] = w
    wp[0, 0, range(pad), range(pad)] = 1.0  # a padded query sees itself (its row is left out)
    mask = torch.ones(1, T + pad, dtype=torch.long)
    mask[0, :pad] = 0
    for sinks in (0, 1, 2):
        torch.testing.assert_close(mean_distance(wp, mask, sinks), mean_distance(w, sinks=sinks))


def test_gate_biases_give_the_measured_horizon(make_teacher):
    teacher = _span_teacher(make_teacher)
    student = from_pretrained_transformer(teacher, num_slots=4, gate_bias=True, gate_logit_normalizer=8.0)
    spans = init_gates_from_spans(student, teacher, _ids(5, B=3, T=24), batch_size=2, sinks=0)
    D = 23 / 4
    tau = 8.0
    by_hand = math.log((D / (1 + D)) ** tau / (1 - (D / (1 + D)) ** tau))
    shortest = math.log((MIN_SPAN / (1 + MIN_SPAN)) ** tau / (1 - (MIN_SPAN / (1 + MIN_SPAN)) ** tau))
    for block in student.model.layers:
        bias = block.attn.f_proj.bias.view(2, 4)
        torch.testing.assert_close(bias[1], torch.full((4,), by_hand), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bias[0], torch.full((4,), shortest), rtol=1e-4, atol=1e-4)
        # through the layer's own gate, at W_f x = 0: alpha / (1 - alpha), the slots' mean age, is the span
        with torch.no_grad():
            block.attn.f_proj.weight.zero_()
        f = block.attn.f_proj(torch.randn(1, 1, 48))
        _, g = block.attn._slot_writes(f, 1, 1, torch.float32)
        alpha = g.exp()[0, 0, 1]
        torch.testing.assert_close(alpha / (1 - alpha), torch.full((4,), D), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(spans[:, 1], torch.full((2,), D), rtol=1e-5, atol=1e-5)


def test_span_logits_spread_and_refusals(make_teacher):
    logits = span_gate_logits(torch.tensor([[3.0]]), tau=1.0, num_slots=3, spread=2.0)
    torch.testing.assert_close(logits[0, 0], torch.tensor([math.log(3) - 2, math.log(3), math.log(3) + 2]))
    # on the spans' device: the trainer measures them on the teacher's GPU ("meta" stands in for it here)
    on_device = span_gate_logits(torch.full((2, 3), 3.0, device="meta"), tau=1.0, num_slots=4, spread=2.0)
    assert (on_device.device.type, on_device.dtype, on_device.shape) == ("meta", torch.float32, (2, 3, 4))
    with pytest.raises(ValueError, match="spans must be"):
        span_gate_logits(torch.ones(3), 8.0, 4)
    with pytest.raises(ValueError, match="spread"):
        span_gate_logits(torch.ones(1, 1), 8.0, 4, spread=-1.0)
    teacher = make_teacher("llama")
    with pytest.raises(ValueError, match="gate_bias=True"):
        init_gates_from_spans(from_pretrained_transformer(teacher, num_slots=4), teacher, _ids(0))
