"""SETTINGS.products_ahead: kernel_a's intra-chunk products a_t . b_j taken by a kernel of their own (chunk_ab.py)
before the state walks, kernel_a reading them back (AHEAD). The whole op, forward, final states and every gradient
against the float64 reference, through kernel_a's chunk programs (WHOLE) and its sub-block programs, grouped heads
(one program a kv head or a query head), factored and pairwise diagonal sub-blocks, packed sequences with partial
chunks, and head dims on both sides of 128; the launches recorded to show the products were taken ahead."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_a as chunk_a  # noqa: E402
import gsa.ops.triton.chunk_ab as chunk_ab  # noqa: E402
from gsa.ops import gated_slot_attention, parallel_reference, recurrent_reference  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from gsa.ops.triton.chunks import BT, prepare_chunks  # noqa: E402
from launch_runs import kernel_a_entries, recorded_run  # noqa: E402
from op_inputs import assert_matches, assert_ratio, cast, make_inputs, on, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def ahead_run(x, monkeypatch, ahead=True, launch=None, **kw):
    """The op on float32 copies of x with SETTINGS.products_ahead = `ahead`, and its chunk_ab and kernel_a launches
    as (kernel name, AHEAD or None)."""
    with SETTINGS.override(products_ahead=ahead):
        got, launches = recorded_run(x, monkeypatch, [chunk_a, chunk_ab], ("kernel", "AHEAD"), launch, **kw)
    return got, launches


def expected_launches(whole: bool):
    a = "chunk_gsa_fwd_kernel_a_whole" if whole else "chunk_gsa_fwd_kernel_a"
    return [("chunk_gsa_kernel_ab", None), (a, True), ("chunk_gsa_kernel_ab", None), (a, True)]


@pytest.mark.parametrize("span", [pytest.param(-1.0, id="pairwise"), pytest.param(float("inf"), id="factored")])
@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("group", [True, False])
def test_products_ahead_match_reference(group, whole, span, monkeypatch):
    """2 query heads a kv head, K and V not multiples of 16, M = 24, a partial last chunk (T = 70), an initial
    state and the final states; kernel_a as one program a chunk (WHOLE) or a sub-block, a kv head (GROUP) or a
    query head."""
    x = make_inputs(B=2, T=70, HQ=4, H=2, K=20, V=12, M=24, tau=1.0)
    with SETTINGS.override(factor_span=span):
        got, launches = ahead_run(x, monkeypatch, launch=kernel_a_entries(WHOLE=whole, GROUP=group))
    assert launches == expected_launches(whole)
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_products_ahead_over_packed_sequences_at_wide_heads(slot_read, monkeypatch):
    """Packed sequences of 1, 64 and 70 tokens (sub-blocks past each end), K = 136 and V = 144 (over 128: kernel_a's
    sub-block programs by default, three D tiles), one query head a kv head."""
    cu = torch.tensor([0, 1, 65, 135])
    x = make_inputs(B=1, T=135, HQ=2, H=2, K=136, V=144, M=9, N=3, tau=1.0)
    got, launches = ahead_run(x, monkeypatch, slot_read=slot_read, cu_seqlens=cu.to(DEVICE, torch.int32))
    assert launches == expected_launches(False)
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read, cu_seqlens=cu), tol=2e-5)


def test_products_equal_the_inline_ones(monkeypatch):
    """The same op with the products ahead and inline agree to float32 rounding (only the products' summation
    order differs), and the inline run launches no chunk_ab."""
    x = make_inputs(B=1, T=80, HQ=2, H=1, K=40, V=24, M=16, tau=1.0)
    ahead, _ = ahead_run(x, monkeypatch, True)
    inline, launches = ahead_run(x, monkeypatch, False)
    assert all(kernel != "chunk_gsa_kernel_ab" and not flag for kernel, flag in launches), launches
    assert_matches(ahead, inline, tol=1e-6)


def test_the_products_kernel_alone():
    """chunk_ab against torch: a_t . b_j for j <= t inside each chunk, 0 elsewhere and on padded rows' columns."""
    torch.manual_seed(0)
    T, HQ, H, D = BT + 9, 4, 2, 40
    a, b = torch.randn(T, HQ, D, device=DEVICE), torch.randn(T, H, D, device=DEVICE)
    got = chunk_ab.chunk_ab(a, b, prepare_chunks(None, 1, T, DEVICE), "ieee").cpu().double()
    a64, b64 = a.cpu().double(), b.cpu().double().repeat_interleave(HQ // H, dim=1)
    want = torch.zeros(T, HQ, BT, dtype=torch.float64)
    for t0 in range(0, T, BT):
        n = min(BT, T - t0)
        dots = torch.einsum("thd,jhd->thj", a64[t0:t0 + n], b64[t0:t0 + n])
        want[t0:t0 + n, :, :n] = dots * torch.ones(n, n, dtype=torch.float64).tril()[:, None, :]
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


def test_products_ahead_by_default_at_wide_heads_in_large_ops():
    with SETTINGS.override(products_ahead=None, overlap_min_rows=1000):
        assert chunk_ab.products_ahead(512, 1000) and chunk_ab.products_ahead(136, 5000)
        assert not chunk_ab.products_ahead(128, 1 << 20)  # kernel_a's chunk programs
        assert not chunk_ab.products_ahead(512, 999)  # no second stream to hide them on
    with SETTINGS.override(products_ahead=True):
        assert chunk_ab.products_ahead(64, 1)
    with SETTINGS.override(products_ahead="yes"):
        with pytest.raises(ValueError, match=r"SETTINGS.products_ahead must be None, True or False, got 'yes'"):
            chunk_ab.products_ahead(512, 1 << 20)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [dict(B=2, T=130, HQ=4, H=4, K=256, V=256, M=64),
                                   dict(B=2, T=2048, HQ=4, H=2, K=512, V=512, M=64)])
def test_gpu_products_ahead_within_2x_of_the_torch_backend(dtype, shape, monkeypatch):
    """The products ahead in 16-bit inputs, at head dims where they are the default and over 32 chunks."""
    monkeypatch.setattr(SETTINGS, "products_ahead", True)
    x = on(make_inputs(**shape, tau=4.0), "cuda")
    truth = run(recurrent_reference, x)
    baseline = run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), on(cast(x, dtype), "cuda"))

    def op(q, k, v, s, g, *, initial_state=None, output_final_state=False):
        return chunk_gsa(q, k, v, s, g, q.shape[-1] ** -0.5, initial_state, output_final_state, None)

    assert_ratio(run(op, on(cast(x, dtype), "cuda")), baseline, truth, ratio=2.0, floor=1e-5)
