"""kernel_ds's launch option "FUSED" (SETTINGS.launch["ds"]["FUSED"], on by default): with one query head a kv head,
a pass's x_j . y_t from the D loop of x_j @ dS. The whole op, forward, final states and every gradient against the float64
reference, over two D tiles (the second partial), factored and pairwise diagonal sub-blocks, both reads, packed
sequences; grouped heads drop the option."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_ds as chunk_ds  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from launch_runs import recorded_run  # noqa: E402
from op_inputs import assert_matches, make_inputs, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def fused_run(x, fused, monkeypatch, whole=None, **kw):
    """run(chunk_op, ...) on float32 copies of x with kernel_ds's "FUSED" at `fused` (None: the default launch
    options) and its "WHOLE" at `whole` (None: the default), recording its launches' FUSED."""
    ds = {**SETTINGS.launch.get("ds", {}), **({} if whole is None else {"WHOLE": whole})}
    launch = None if fused is None else {**SETTINGS.launch, "ds": {**ds, "FUSED": fused}}
    return recorded_run(x, monkeypatch, [chunk_ds], ("FUSED",), launch, **kw)


@pytest.mark.parametrize("span", [pytest.param(-1.0, id="pairwise"), pytest.param(float("inf"), id="factored")])
@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_fused_ds_loop(slot_read, span, monkeypatch):
    """K = 80 and V = 72 (two D tiles of 64, the second partial), M = 24, a partial last chunk."""
    x = make_inputs(B=2, T=70, HQ=2, H=2, K=80, V=72, M=24, tau=1.0)
    with SETTINGS.override(factor_span=span):
        got, launches = fused_run(x, True, monkeypatch, slot_read=slot_read)
    assert launches == [(True,)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read), tol=2e-5)


@pytest.mark.parametrize("whole", [pytest.param(False, id="sub-block-programs"), pytest.param(True, id="whole")])
def test_fused_ds_loop_packed(whole, monkeypatch):
    """Packed sequences of 1, 64 and 37 tokens (an empty sub-block past each end), with a program a 16-row key
    sub-block and with a program a chunk (the default)."""
    cu = torch.tensor([0, 1, 65, 102])
    x = make_inputs(B=1, T=102, HQ=2, H=2, K=16, V=20, M=40, N=3, tau=1.0)
    got, launches = fused_run(x, True, monkeypatch, whole, cu_seqlens=cu.to(DEVICE, torch.int32))
    assert launches == [(True,)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=cu), tol=2e-5)


@pytest.mark.parametrize("fused", [None, False])
def test_default_and_unfused(fused, monkeypatch):
    """The default launch options take the fused loop; FUSED = False the loop a query head."""
    x = make_inputs(B=1, T=40, HQ=2, H=2, K=24, V=16, M=16, tau=1.0)
    got, launches = fused_run(x, fused, monkeypatch)
    assert launches == [(fused is None,)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_grouped_heads_drop_fused(monkeypatch):
    """Two query heads a kv head: the option is dropped (one loop a query head), the op still exact."""
    x = make_inputs(B=1, T=40, HQ=4, H=2, K=16, V=16, M=16, tau=1.0)
    got, launches = fused_run(x, True, monkeypatch)
    assert launches == [(False,)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_fused_must_be_a_bool(monkeypatch):
    x = make_inputs(B=1, T=20, HQ=1, H=1, K=16, V=16, M=16, tau=1.0)
    with pytest.raises(ValueError, match=r"\['ds'\]\['FUSED'\] \(one D loop .*must be a bool, got 1"):
        fused_run(x, 1, monkeypatch)
