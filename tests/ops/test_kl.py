"""The fused KL kernels (gsa.ops.triton.kl): sum_n w_n KL(softmax(t_n / T) || softmax(s_n / T)) and its gradient
for s, against two float64 references (the formula term by term, and torch's kl_div), on the CPU under the Triton
interpreter (float32 and float16) and on a GPU (bfloat16 too)."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

from gsa.ops.triton import kl as kl_mod  # noqa: E402
from gsa.ops.triton.kl import fused_kl  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Masked and -inf lanes compute inf - inf before a where() drops them; the interpreter's numpy says so.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _references(s, t, w, temperature):
    """sum_n w_n KL_n in float64, two ways; s (float64, requires grad) and t float64 [N, V], w [N]."""
    ls, lt = torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1)
    terms = torch.where(lt.isneginf(), 0.0, lt.exp() * (lt - ls)).sum(-1)
    by_formula = (terms * w).sum()
    pointwise = torch.nn.functional.kl_div(ls, lt, log_target=True, reduction="none")  # 0 * -inf = NaN where p = 0
    by_kl_div = (torch.where(lt.isneginf(), 0.0, pointwise).sum(-1) * w).sum()
    return by_formula, by_kl_div


def _grad_bound(s64, t64, w64, scale, temperature, dtype):
    """What rounding allows ds [N, V] to differ from the float64 gradient: each p = exp(x / T - lse) is computed in
    float32 from an exponent with an absolute error of a few float32 ulps of |x / T| + |lse|, so p is off by that much
    relatively; then ds is rounded to dtype."""
    eps32 = torch.finfo(torch.float32).eps
    bound = torch.zeros_like(s64)
    for x in (s64, t64):
        z = x / temperature
        finite = torch.where(z.isfinite(), z, 0.0)
        lse = torch.logsumexp(z, -1, keepdim=True)
        bound += torch.softmax(z, -1) * (1 + finite.abs() + lse.abs()) * 4 * eps32
    bound *= abs(scale) * w64[:, None] / temperature
    p_s, p_t = torch.softmax(s64 / temperature, -1), torch.softmax(t64 / temperature, -1)
    want = scale * w64[:, None] / temperature * (p_s - p_t)
    fin = torch.finfo(dtype)
    return bound + fin.eps * want.abs() + fin.tiny * fin.eps, want  # (the last: its smallest step, subnormals)


def _inputs(N, V, dtype, seed, wide=0):
    """Logits s, t [N, V] in dtype (s a view of a [N, V + wide] tensor when wide > 0: rows not contiguous), spread
    like a language model's (scale 4), a few teacher words at -inf, and weights with two rows at 0."""
    g = torch.Generator().manual_seed(seed)
    s = (4 * torch.randn(N, V + wide, generator=g)).to(dtype)[:, :V]
    t = (4 * torch.randn(N, V, generator=g)).to(dtype)
    t[0, :3] = float("-inf")
    w = torch.rand(N, generator=g)
    w[1] = 0
    w[N - 1] = 0
    return s.to(DEVICE), t.to(DEVICE), w.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N,V,wide,temperature", [(5, 37, 0, 1.0), (4, 4096 + 77, 3, 2.5), (3, 4096, 0, 0.7)])
def test_fused_kl_matches_two_float64_references(dtype, N, V, wide, temperature):
    """Value and gradient against both references on the same (rounded) logits; one tile and several (V > BV, a
    last tile partly masked); rows not contiguous; inputs left unchanged; ds in s's dtype."""
    s, t, w = _inputs(N, V, dtype, seed=N + V, wide=wide)
    s.requires_grad_()
    before = (s.detach().clone(), t.clone(), w.clone())
    got = fused_kl(s, t, w, temperature)
    (ds,) = torch.autograd.grad(got, s, torch.tensor(1.5, device=DEVICE))
    assert got.dtype == torch.float32 and ds.dtype == dtype and ds.shape == (N, V)
    s64 = s.detach().double().requires_grad_()
    bound, by_softmax = _grad_bound(s64.detach(), t.double(), w.double(), 1.5, temperature, dtype)
    for ref in _references(s64, t.double(), w.double(), temperature):
        (want,) = torch.autograd.grad(ref, s64, torch.tensor(1.5, dtype=torch.float64, device=DEVICE),
                                      retain_graph=True)
        torch.testing.assert_close(want, by_softmax, rtol=1e-12, atol=1e-15)  # the references agree
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
        assert ((ds.double() - want).abs() <= bound).all(), ((ds.double() - want).abs() / bound).max()
    assert all(torch.equal(a, b) for a, b in zip((s.detach(), t, w), before))


def test_fused_kl_rows_of_weight_zero_add_exactly_nothing():
    """Rows of weight 0 (padding) with non-finite logits: the sum and the other rows' gradient as without them, their
    gradient exactly 0; identical logits give 0."""
    s, t, w = _inputs(6, 300, torch.float32, seed=3)
    bad = s.clone()
    bad[1] = float("nan")
    bad[5, :7] = float("inf")
    s.requires_grad_()
    bad.requires_grad_()
    kept, spoilt = fused_kl(s, t, w, 1.0), fused_kl(bad, t, w, 1.0)
    assert torch.equal(kept, spoilt)
    (gs,) = torch.autograd.grad(kept, s)
    (gb,) = torch.autograd.grad(spoilt, bad)
    assert torch.equal(gs, gb) and not gb[1].any() and not gb[5].any()
    same = fused_kl(t, t, torch.ones(6, device=DEVICE), 1.0)
    assert abs(same.item()) < 1e-5
    strided = torch.stack([w, torch.full_like(w, 7.0)], 1)[:, 0]  # weights a view with stride 2
    assert torch.equal(fused_kl(s.detach(), t, strided, 1.0), kept.detach())


def test_fused_kl_tiles_agree_whatever_the_tile(monkeypatch):
    """The running log-sum-exp over tiles gives the one-tile result: BV 4096 (one tile of V = 1000) against 16 (63
    tiles, the last partly masked)."""
    s, t, w = _inputs(3, 1000, torch.float32, seed=4)
    one = fused_kl(s, t, w, 1.0)
    monkeypatch.setattr(kl_mod, "BV", 16)
    many = fused_kl(s, t, w, 1.0)
    torch.testing.assert_close(many, one, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_gpu_fused_kl_bf16_at_a_language_models_vocabulary():
    """bf16 logits at SmolLM2's 49152 words: within float32 rounding of the float64 formula, ds within bf16's."""
    s, t, w = _inputs(64, 49152, torch.bfloat16, seed=5)
    s.requires_grad_()
    got = fused_kl(s, t, w, 1.0)
    (ds,) = torch.autograd.grad(got, s)
    s64 = s.detach().double().requires_grad_()
    ref = _references(s64, t.double(), w.double(), 1.0)[0]
    (want,) = torch.autograd.grad(ref, s64)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    bound, _ = _grad_bound(s64.detach(), t.double(), w.double(), 1.0, 1.0, torch.bfloat16)
    assert ((ds.double() - want).abs() <= bound).all(), ((ds.double() - want).abs() / bound).max()


@pytest.mark.parametrize("change,error,match", [
    ("shape", ValueError, r"one shape, got \(3, 10\) and \(3, 11\)"),
    ("rank", ValueError, r"\[N, V\] logits of one shape, got \(3, 10, 1\)"),
    ("dtype", TypeError, "share a dtype .* got torch.float16 and torch.float32"),
    ("float64", TypeError, "got torch.float64 and torch.float64"),
    ("weights", ValueError, r"w must be float32 \[3\] \(a weight a row\), got torch.float32 \(4,\)"),
    ("weight dtype", ValueError, r"got torch.float64 \(3,\)"),
    ("teacher grad", ValueError, "must not require grad"),
    ("temperature", ValueError, "temperature must be positive, got 0"),
])
def test_fused_kl_refuses_bad_input_by_name(change, error, match):
    s, t, w = torch.randn(3, 10), torch.randn(3, 10), torch.ones(3)
    temperature = 1.0
    if change == "shape":
        t = torch.randn(3, 11)
    elif change == "rank":
        s, t = s[..., None], t[..., None]
    elif change == "dtype":
        s = s.half()
    elif change == "float64":
        s, t = s.double(), t.double()
    elif change == "weights":
        w = torch.ones(4)
    elif change == "weight dtype":
        w = w.double()
    elif change == "teacher grad":
        t.requires_grad_()
    else:
        temperature = 0
    with pytest.raises(error, match=match):
        fused_kl(s, t, w, temperature)
