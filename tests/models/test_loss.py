"""The language-model loss (gsa.models.loss.cross_entropy_rows, shifted_lm_loss): against F.cross_entropy on
float64 / float32 copies, chunked or not, with ignored rows, and what it keeps for the backward."""

import pytest
import torch
import torch.nn.functional as F

import gsa.models.loss as loss_mod
from gsa.models.loss import cross_entropy_rows
from gsa.models.modeling import shifted_lm_loss


def reference(logits, target):
    x = logits.detach().to(torch.promote_types(logits.dtype, torch.float32)).requires_grad_()
    out = F.cross_entropy(x, target, ignore_index=-100)
    return out, x


@pytest.mark.parametrize("chunk", [None, 37])  # one chunk, or chunks of 1 row (37 elements < vocab)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_cross_entropy_with_ignored_rows(dtype, chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    logits = (torch.randn(13, 50, dtype=dtype) * 4).requires_grad_()
    target = torch.randint(0, 50, (13,))
    target[[2, 7]] = -100
    want, x = reference(logits, target)
    got = cross_entropy_rows(logits, target)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, want, **tol)
    g = torch.tensor(0.7, dtype=got.dtype)  # a scaled loss (gradient accumulation)
    (dg,) = torch.autograd.grad(got, logits, g)
    (dw,) = torch.autograd.grad(want, x, g)
    assert dg[[2, 7]].abs().max() == 0
    torch.testing.assert_close(dg, dw, **tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda z: cross_entropy_rows(z, target), (logits,))


def test_bf16_logits_float32_loss_gradient_rounded_once():
    """bf16 logits: the loss in float32 and the gradient rounded once from float32, as through a float32 copy."""
    torch.manual_seed(1)
    logits = (torch.randn(9, 64) * 3).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, 64, (9,))
    want, x = reference(logits, target)
    got = cross_entropy_rows(logits, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    (dg,) = torch.autograd.grad(got, logits)
    (dw,) = torch.autograd.grad(want, x)
    assert dg.dtype == torch.bfloat16
    torch.testing.assert_close(dg.float(), dw.to(torch.bfloat16).float(), rtol=0, atol=0)


def test_keeps_no_float32_copy_of_the_logits():
    logits = torch.randn(32, 100, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 100, (32,))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        cross_entropy_rows(logits, target)
    big = [(tuple(t.shape), t.dtype) for t in saved if t.numel() >= 32 * 100]
    assert big == [((32, 100), torch.bfloat16)], big  # the logits themselves, nothing [N, vocab] in float32


def test_no_target_gives_nan_loss_and_zero_gradient():
    logits = torch.randn(3, 5, requires_grad=True)
    got = cross_entropy_rows(logits, torch.full((3,), -100))
    assert torch.isnan(got) and torch.isnan(F.cross_entropy(logits, torch.full((3,), -100)))
    (dg,) = torch.autograd.grad(got, logits)
    assert dg.abs().max() == 0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"logits \[N, vocab\] and target \[N\], got \(2, 3, 4\) and \(2, 3\)"):
        cross_entropy_rows(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_shifted_loss_matches_the_definition_with_packed_sequences():
    """Position t predicts t + 1; the last position of the row and of each packed sequence predicts nothing."""
    torch.manual_seed(2)
    logits = torch.randn(2, 9, 20, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 20, (2, 9))
    labels[0, 4] = -100
    cu = torch.tensor([0, 3, 9])
    target = labels[:, 1:].clone()
    target[:, 2] = -100  # position 2 is sequence 0's last token
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 20), target.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(shifted_lm_loss(logits, labels, cu), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shifted_lm_loss(logits, labels), F.cross_entropy(
        logits[:, :-1].reshape(-1, 20), labels[:, 1:].reshape(-1), ignore_index=-100), rtol=1e-12, atol=1e-12)


def test_compiles_in_one_graph():
    logits = torch.randn(6, 30, requires_grad=True)
    target = torch.randint(0, 30, (6,))
    compiled = torch.compile(cross_entropy_rows, backend="aot_eager", fullgraph=True)
    (dg,) = torch.autograd.grad(compiled(logits, target), logits)
    (dw,) = torch.autograd.grad(cross_entropy_rows(logits, target), logits)
    torch.testing.assert_close(dg, dw, rtol=1e-6, atol=1e-7)
