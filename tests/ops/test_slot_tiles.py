"""kernel_ds's launch option "BM": several slot tiles (SETTINGS.launch["ds"]["BM"] under M). The whole op, forward,
final states and every gradient against the float64 reference, with the softmax read (whose row max and sum then
span every slot tile) and the linear read, factored and pairwise diagonal sub-blocks, grouped heads and packed
sequences."""

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


def tiled_run(x, tile, monkeypatch, **kw):
    """run(chunk_op, ...) on float32 copies of x with kernel_ds at slot tile `tile` (None: the launcher's own),
    recording (BM, TILED) of each of kernel_ds's launches."""
    launch = None if tile is None else {**SETTINGS.launch, "ds": {"BM": tile}}
    return recorded_run(x, monkeypatch, [chunk_ds], ("BM", "TILED"), launch, **kw)


@pytest.mark.parametrize("span", [pytest.param(-1.0, id="pairwise"), pytest.param(float("inf"), id="factored")])
@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_slot_tiles_not_dividing_M(slot_read, span, monkeypatch):
    """M = 40 in 16-wide slot tiles (the last one 8 slots), two query heads a kv head, a partial last chunk."""
    x = make_inputs(B=2, T=70, HQ=4, H=2, K=16, V=12, M=40, tau=1.0)
    with SETTINGS.override(factor_span=span):
        got, launches = tiled_run(x, 16, monkeypatch, slot_read=slot_read)
    assert launches == [(16, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read), tol=2e-5)


@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_packed_sequences_in_slot_tiles(slot_read, monkeypatch):
    """Packed sequences of 1, 64 and 37 tokens (an empty sub-block past each end) at M = 40 in 16-wide tiles."""
    cu = torch.tensor([0, 1, 65, 102])
    x = make_inputs(B=1, T=102, HQ=4, H=2, K=16, V=20, M=40, N=3, tau=1.0)
    got, launches = tiled_run(x, 16, monkeypatch, slot_read=slot_read, cu_seqlens=cu.to(DEVICE, torch.int32))
    assert launches == [(16, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read, cu_seqlens=cu), tol=2e-5)


def test_64_wide_slot_tiles_at_128_slots(monkeypatch):
    """M = 128 at the launcher's own slot tile (64: two tiles; the "ds@m128" entry, one tile by default, emptied),
    with gates near SETTINGS.factor_span's bound: the slot tiles of one sub-block decide factored or pairwise on
    their own slots' decay, and both happen."""
    x = make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=128, tau=1.0)
    gl = x["g"].detach()[0, :64, 0].cumsum(0).view(4, 16, 2, 64)  # first chunk: [sub-block, row, slot tile, slot]
    spans = (gl[:, :1] - gl).amax((1, 3))  # [sub-block, slot tile], as tiles.sub_block_span
    assert (spans < SETTINGS.factor_span).any() and (spans > SETTINGS.factor_span).any(), spans
    with SETTINGS.override(launch={**SETTINGS.launch, "ds@m128": {}}):
        got, launches = tiled_run(x, None, monkeypatch)
    assert launches == [(64, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_128_slots_default_to_one_tile(monkeypatch):
    """The default launch options at M = 128 (what the H100 A/B timed): kernel_ds in one 128-wide tile."""
    x = make_inputs(B=1, T=20, HQ=2, H=1, K=16, V=16, M=128, tau=1.0)
    got, launches = tiled_run(x, None, monkeypatch)
    assert launches == [(128, False)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)
