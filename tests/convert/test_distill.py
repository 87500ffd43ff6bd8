"""The two distillation stages on a tiny teacher / converted student pair: the losses fall in a few steps."""

import pytest
import torch

from convert_teachers import make_teacher  # noqa: F401  (fixtures)
from gsa.convert import from_pretrained_transformer
from gsa.convert.distill import (
    attention_transfer_loss,
    attention_transfer_parameters,
    kl_to_teacher,
    logit_distillation_loss,
)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (4, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # one left-padded row
    return ids, mask


def _pair(make_teacher, arch="llama"):
    teacher = make_teacher(arch, num_hidden_layers=2, initializer_range=0.2)  # a sharper teacher than HF init
    student = from_pretrained_transformer(teacher, num_slots=8, init_std=0.1).train()
    return teacher, student


def _steps(loss_fn, params, n=12, lr=3e-2):
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(n):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_attention_transfer_trains_only_f_proj_and_falls(make_teacher, arch):
    teacher, student = _pair(make_teacher, arch)
    params = attention_transfer_parameters(student)
    assert len(params) == 2 and all(p.requires_grad for p in params)
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    teacher_before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    ids, mask = _batch()
    losses = _steps(lambda: attention_transfer_loss(student, teacher, ids, mask), params)
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(p, frozen[n]) for n, p in student.named_parameters() if n in frozen)
    assert all(torch.equal(p, teacher_before[n]) for n, p in teacher.named_parameters())


def test_attention_transfer_parameter_choice(make_teacher):
    _, student = _pair(make_teacher, "qwen2")
    params = attention_transfer_parameters(student, ("f_proj", "q_proj", "k_proj"))
    assert len(params) == 2 * (1 + 2 + 2)  # per layer: f_proj, q_proj weight + bias, k_proj weight + bias
    with pytest.raises(ValueError, match="subset"):
        attention_transfer_parameters(student, ("mlp",))
    # names the student has no parameter for (no learned maps, no window) would leave only the rest training
    with pytest.raises(ValueError, match=r"\['memory_scale', 'q_map'\].*no parameter"):
        attention_transfer_parameters(student, ("f_proj", "q_map", "memory_scale"))


def test_hybrid_attention_transfer_starts_lower_and_learns_the_memory_share(make_teacher):
    """A hybrid student whose window covers the batch's 24 tokens starts at the teacher (loss ~0); with window 4 +
    1 sink it starts closer than the plain conversion, and stage 1 on f_proj and memory_scale lowers the loss by
    opening the slot memory."""
    teacher, plain = _pair(make_teacher)
    ids, mask = _batch()
    wide = from_pretrained_transformer(teacher, num_slots=8, window_size=24)
    with torch.no_grad():
        assert attention_transfer_loss(wide, teacher, ids, mask).item() < 1e-9
        start_plain = attention_transfer_loss(plain, teacher, ids, mask).item()
    hybrid = from_pretrained_transformer(teacher, num_slots=8, init_std=0.1, window_size=4,
                                         num_sink_tokens=1).train()
    params = attention_transfer_parameters(hybrid, ("f_proj", "memory_scale"))
    assert len(params) == 2 * 2
    losses = _steps(lambda: attention_transfer_loss(hybrid, teacher, ids, mask), params)
    assert losses[0] < start_plain, (losses[0], start_plain)
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(b.attn.memory_scale.abs().max() > 0 for b in hybrid.model.layers)


def test_attention_transfer_ignores_padding(make_teacher):
    teacher, student = _pair(make_teacher)
    ids, mask = _batch()
    base = attention_transfer_loss(student, teacher, ids, mask)
    ids2 = ids.clone()
    ids2[1, :5] = 7  # change only padded positions
    torch.testing.assert_close(attention_transfer_loss(student, teacher, ids2, mask), base)


def test_answer_positions_add_their_own_mean_to_the_attention_loss(make_teacher):
    """Stage 1 with answer_weight w: each layer's loss is its MSE over all tokens plus w x its MSE averaged over the
    answer positions alone (padded answer positions left out); weight 0 or no answers leaves the loss as it was."""
    from gsa.convert.distill import teacher_attention_io

    teacher, student = _pair(make_teacher)
    ids, mask = _batch()
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[0, 10:13] = answer[2, 20:23] = True
    answer[1, 2] = True  # a padded position: not counted
    base = attention_transfer_loss(student, teacher, ids, mask)
    assert torch.equal(attention_transfer_loss(student, teacher, ids, mask, answer=answer), base)
    assert torch.equal(attention_transfer_loss(student, teacher, ids, mask, answer=answer & False, answer_weight=3.0),
                       base)
    inputs, targets, _ = teacher_attention_io(teacher, ids, mask)
    extra = []
    for block, x, t in zip(student.model.layers, inputs, targets):
        err = (block.attn(x, attention_mask=mask)[0] - t).pow(2).mean(-1)
        extra.append(torch.cat([err[0, 10:13], err[2, 20:23]]).mean())
    got = attention_transfer_loss(student, teacher, ids, mask, answer=answer, answer_weight=3.0)
    torch.testing.assert_close(got, base + 3.0 * torch.stack(extra).mean())


def test_relative_attention_loss_weighs_every_layer_alike(make_teacher):
    """relative=True: each layer's MSE (real tokens only) divided by its teacher output's mean square over the same
    positions, then averaged; a layer whose outputs are scaled up by 10 then weighs as before, where the plain MSE
    grows 100x with it. Gradients reach the student only through the MSE (the scale is the teacher's)."""
    from gsa.convert.distill import teacher_attention_io

    teacher, student = _pair(make_teacher)
    ids, mask = _batch()
    inputs, targets, _ = teacher_attention_io(teacher, ids, mask)
    real = mask.bool()
    want = []
    for block, x, t in zip(student.model.layers, inputs, targets):
        err = (block.attn(x, attention_mask=mask)[0] - t).pow(2).mean(-1)
        want.append(err[real].mean() / t.pow(2).mean(-1)[real].mean())
    got = attention_transfer_loss(student, teacher, ids, mask, relative=True)
    torch.testing.assert_close(got, torch.stack(want).mean())
    params = attention_transfer_parameters(student)
    losses = _steps(lambda: attention_transfer_loss(student, teacher, ids, mask, relative=True), params)
    assert losses[-1] < 0.8 * losses[0], losses


def test_block_target_matches_whole_blocks_on_the_teachers_residual_stream(make_teacher):
    """target="block": a student whose window covers the batch reproduces every teacher block exactly (loss ~0; its
    MLPs and norms are the teacher's); the plain student's loss equals a hand computation from the teacher's block
    inputs and outputs, relative to what each teacher block adds; training f_proj lowers it."""
    from gsa.convert.distill import block_io

    teacher, student = _pair(make_teacher)
    ids, mask = _batch()
    wide = from_pretrained_transformer(teacher, num_slots=8, window_size=24)
    with torch.no_grad():
        assert attention_transfer_loss(wide, teacher, ids, mask, target="block").item() < 1e-9
    inputs, outputs = block_io(teacher, ids, mask)
    real = mask.bool()
    want = []
    for block, x, t in zip(student.model.layers, inputs, outputs):
        err = (block(x, mask, None, None, False)[0] - t).pow(2).mean(-1)
        want.append(err[real].mean() / (t - x).pow(2).mean(-1)[real].mean())
    got = attention_transfer_loss(student, teacher, ids, mask, relative=True, target="block")
    torch.testing.assert_close(got, torch.stack(want).mean())
    params = attention_transfer_parameters(student)
    losses = _steps(lambda: attention_transfer_loss(student, teacher, ids, mask, relative=True, target="block"),
                    params)
    assert losses[-1] < 0.8 * losses[0], losses
    with pytest.raises(ValueError, match="target must be"):
        attention_transfer_loss(student, teacher, ids, mask, target="mlp")


def test_layer_loss_config_is_checked():
    from gsa.errors import InputError
    from gsa.train.config import load_config

    text = ["data.kind=text", "data.documents=false", "distill.teacher=t"]
    with pytest.raises(InputError, match="distill.layer_loss must be"):
        load_config(None, [*text, "distill.stage=attention", "distill.layer_loss=rel"])
    with pytest.raises(InputError, match="weighs the layers of stage \"attention\""):
        load_config(None, [*text, "distill.stage=logits", "distill.layer_loss=relative"])
    assert load_config(None, [*text, "distill.stage=attention",
                              "distill.layer_loss=relative"]).distill.layer_loss == "relative"
    with pytest.raises(InputError, match="distill.layer_target must be"):
        load_config(None, [*text, "distill.stage=attention", "distill.layer_target=mlp"])
    with pytest.raises(InputError, match="distill.layer_target is stage"):
        load_config(None, [*text, "distill.stage=logits", "distill.layer_target=block"])


def test_logit_distillation_falls(make_teacher):
    teacher, student = _pair(make_teacher)
    ids, mask = _batch()
    losses = _steps(lambda: logit_distillation_loss(student, teacher, ids, mask, temperature=2.0),
                    list(student.parameters()), n=10, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_answer_cross_entropy_adds_to_the_kl(make_teacher):
    teacher, student = _pair(make_teacher)
    ids, _ = _batch()
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[0, 10:13] = answer[2, 20:23] = True  # positions whose next token is an answer token
    kl = logit_distillation_loss(student, teacher, ids)
    assert torch.equal(logit_distillation_loss(student, teacher, ids, answer=answer), kl)  # weight 0: off
    assert torch.equal(logit_distillation_loss(student, teacher, ids, answer_weight=2.0), kl)  # no answers: off
    logits = student(ids).logits.float()
    ce = torch.nn.functional.cross_entropy(torch.cat([logits[0, 10:13], logits[2, 20:23]]),
                                           torch.cat([ids[0, 11:14], ids[2, 21:24]]))
    got = logit_distillation_loss(student, teacher, ids, answer=answer, answer_weight=2.0)
    torch.testing.assert_close(got, kl + 2.0 * ce)


def test_kl_to_teacher():
    t = torch.randn(2, 5, 11)
    assert kl_to_teacher(t, t).abs().item() < 1e-6
    s = torch.randn(2, 5, 11)
    kl = kl_to_teacher(s, t)
    want = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="sum") / 10
    torch.testing.assert_close(kl, want)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = True
    torch.testing.assert_close(kl_to_teacher(s, t, mask), kl_to_teacher(s[:1, 1:2], t[:1, 1:2]))
    with pytest.raises(ValueError, match="temperature"):
        kl_to_teacher(s, t, temperature=0)
    with pytest.raises(ValueError, match=r"one shape, got \(2, 5, 11\) and \(2, 5, 10\)"):
        kl_to_teacher(s, t[..., :10])


def _kl_references(s, t, mask, temperature):
    """KL(teacher || student) * T^2, mean over counted positions, two ways in float64: the formula term by term, and
    torch's kl_div over the counted rows."""
    ls = torch.log_softmax(s / temperature, -1)
    lt = torch.log_softmax(t / temperature, -1)
    terms = (lt.exp() * (lt - ls)).sum(-1)
    by_formula = (terms * mask).sum() / mask.sum() * temperature**2
    rows = mask.reshape(-1).bool()
    by_kl_div = torch.nn.functional.kl_div(ls.reshape(-1, s.shape[-1])[rows], lt.reshape(-1, s.shape[-1])[rows],
                                           log_target=True, reduction="batchmean") * temperature**2
    return by_formula, by_kl_div


@pytest.mark.parametrize("chunk", [1, 4, 1024])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_to_teacher_chunked_matches_two_float64_references(monkeypatch, chunk, temperature):
    """The chunked KL (the teacher without gradient) against two float64 references: value and the student logits'
    gradient, with a mask and a row count (3 x 7) that chunks of 4 split unevenly; its input is left unchanged."""
    import gsa.convert.distill as distill

    monkeypatch.setattr(distill, "KL_CHUNK", chunk)
    g = torch.Generator().manual_seed(1)
    s = (3 * torch.randn(3, 7, 13, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(3, 7, 13, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=g) > 0.3
    before = s.detach().clone()
    got = kl_to_teacher(s, t, mask, temperature)
    (grad,) = torch.autograd.grad(got, s)
    for ref in _kl_references(s, t, mask.double(), temperature):
        (want,) = torch.autograd.grad(ref, s, retain_graph=True)  # the two share the log-softmaxes
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    assert torch.equal(s.detach(), before)
    assert torch.autograd.gradcheck(lambda x: kl_to_teacher(x, t, mask, temperature), (s,))


def test_kl_to_teacher_ignores_uncounted_rows_and_keeps_little_for_the_backward():
    """Rows outside the mask add exactly nothing, even with non-finite logits there; a mask with no position gives NaN
    (a mean over nothing). For the backward the chunked path keeps the two logits tensors and the row weights only,
    where autograd through the plain formula keeps two float32 [rows, vocab] tensors; the gradient comes back in the
    logits' dtype. Teacher logits that require grad get their gradient too (the plain formula)."""
    import gsa.convert.distill as distill

    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 6, 50, generator=g).requires_grad_()
    t = torch.randn(2, 6, 50, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, :2] = False
    bad = s.detach().clone()
    bad[1, 0] = float("inf")
    bad[1, 1] = float("nan")
    bad.requires_grad_()
    kept = kl_to_teacher(s, t, mask)
    got = kl_to_teacher(bad, t, mask)
    torch.testing.assert_close(got, kept)
    (gb,) = torch.autograd.grad(got, bad)
    (gs,) = torch.autograd.grad(kept, s)
    assert torch.isfinite(gb).all() and not gb[1, :2].any()
    torch.testing.assert_close(gb, gs)
    assert torch.isnan(kl_to_teacher(s, t, torch.zeros(2, 6, dtype=torch.bool)))

    def saved_bytes(fn):
        sizes = []

        def pack(x):
            sizes.append(x.numel() * x.element_size())
            return x
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn()
        return sum(sizes)

    half = s.detach().to(torch.bfloat16).requires_grad_()
    row_bytes = 12 * 50 * 4  # one float32 [rows, vocab] tensor
    chunked = saved_bytes(lambda: kl_to_teacher(half, t.to(torch.bfloat16), mask))
    plain = saved_bytes(lambda: distill._kl_rows(half, t.to(torch.bfloat16), 1.0).mean())
    assert chunked <= 2 * 12 * 50 * 2 + 12 * 4 < 2 * row_bytes <= plain, (chunked, plain)
    loss = kl_to_teacher(half, t.to(torch.bfloat16), mask)
    assert loss.dtype == torch.float32
    (gh,) = torch.autograd.grad(loss, half)
    assert gh.dtype == torch.bfloat16
    torch.testing.assert_close(gh.float(), gs, rtol=2e-2, atol=2e-4)
    tg = t.clone().requires_grad_()
    both = torch.autograd.grad(kl_to_teacher(s, tg, mask), (s, tg))
    ref = torch.autograd.grad(_kl_references(s, tg, mask.float(), 1.0)[0], (s, tg))
    for a, b in zip(both, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kl_to_teacher_takes_the_fused_kernels_where_triton_runs(monkeypatch, dtype):
    """With the Triton kernels on (gsa.nn.backend.KERNELS; the interpreter here, CUDA by default) a teacher without
    gradient goes through gsa.ops.triton.kl, and gives the chunked path's loss and gradient; float64 logits keep the
    chunked path."""
    pytest.importorskip("triton")
    import gsa.nn.backend as backend
    import gsa.ops.triton.kl as kl_mod

    calls = []
    real = kl_mod.fused_kl
    monkeypatch.setattr(kl_mod, "fused_kl", lambda *a: calls.append(a[0].dtype) or real(*a))
    g = torch.Generator().manual_seed(5)
    s = (3 * torch.randn(2, 5, 70, generator=g)).to(dtype).requires_grad_()
    t = (3 * torch.randn(2, 5, 70, generator=g)).to(dtype)
    mask = torch.rand(2, 5, generator=g) > 0.3
    want = kl_to_teacher(s, t, mask, 1.5)
    (gwant,) = torch.autograd.grad(want, s)
    assert calls == []
    monkeypatch.setattr(backend, "KERNELS", "triton")
    got = kl_to_teacher(s, t, mask, 1.5)
    (ggot,) = torch.autograd.grad(got, s)
    assert calls == [dtype]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ggot.float(), gwant.float(), rtol=2 * torch.finfo(dtype).eps, atol=1e-6)
    kl_to_teacher(s.detach().double(), t.double(), mask)
    assert calls == [dtype]
