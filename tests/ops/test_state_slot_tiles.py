"""The sequential state kernels (kernel_h, kernel_dh and their carry kernels) with the slots split into tiles.

Each slot column of a state has its own recurrence, so kernel_h and kernel_dh walk BM-wide slot tiles as separate
programs (SETTINGS.launch[name]["BM"]); the reverse walk of the second pass still takes softmax(A1) over all M slots
(from the rows' statistics kernel_a stored: tiles.load_softmax). Forced tiles smaller than M, M not a multiple of
the tile: forward, final states and every gradient against the float64 references.
"""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

from gsa.ops import parallel_reference, recurrent_reference  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from op_inputs import assert_matches, cast, cpu, make_inputs, on, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STATE_KERNELS = ("h", "h-narrow", "dh", "dh-narrow")


def slot_tiles(main: int, carry: int) -> dict:
    """SETTINGS.launch with slot tile `main` for the walks and `carry` for the carry kernels."""
    tiles = {name: {**SETTINGS.launch.get(name, {}), "BM": main} for name in STATE_KERNELS}
    tiles.update({name: {**SETTINGS.launch.get(name, {}), "BM": carry} for name in ("h-carry", "dh-carry")})
    return {**SETTINGS.launch, **tiles}


def chunk_op(q, k, v, s, g, *, initial_state=None, output_final_state=False, cu_seqlens=None, slot_read="softmax"):
    return chunk_gsa(q, k, v, s, g, 0.3, initial_state, output_final_state, cu_seqlens, False, slot_read == "linear")


@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_slot_tiles_smaller_than_m_match_reference(slot_read):
    """M = 40 in 16-wide tiles (the last one 8 slots), grouped query heads (HQ = 2 H), initial states."""
    x = make_inputs(B=2, T=70, HQ=4, H=2, K=24, V=20, M=40, tau=1.0)
    with SETTINGS.override(launch=slot_tiles(16, 16)):
        got = cpu(run(chunk_op, on(cast(x, torch.float32)), slot_read=slot_read))
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read), tol=2e-5)


@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_slot_tiles_in_segmented_walks_of_packed_sequences(slot_read):
    """The segmented walks (three segments, the reverse one too) over packed sequences of 1, 4 and 5 chunks, in
    16-wide D tiles (K = 32: two, V = 24: two) and 16-wide slot tiles, the carry kernels in 32-wide ones: each carry
    kernel reads what the walk stored whatever tile wrote it."""
    lengths = [5, 64 * 3 + 9, 64 * 4 + 1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    x = make_inputs(B=1, T=sum(lengths), HQ=2, H=1, K=32, V=24, M=40, N=len(lengths), tau=2.0)
    with SETTINGS.override(launch=slot_tiles(16, 32), state_segments=3, segment_dh=True, state_tile_max=16):
        got = cpu(run(chunk_op, on(cast(x, torch.float32)), slot_read=slot_read,
                      cu_seqlens=cu.to(DEVICE, torch.int32)))
    assert_matches(got, run(recurrent_reference, x, scale=0.3, slot_read=slot_read, cu_seqlens=cu), tol=2e-5)


@pytest.mark.parametrize("tile", [pytest.param(64, id="64-wide"), pytest.param(128, id="one-tile")])
def test_slot_tiles_at_128_slots(tile):
    """M = 128 with every state kernel in 64-wide slot tiles (the softmax statistics across them), or in one tile
    ({"BM": 128}; the default of the carry and narrow-tile kernels)."""
    x = make_inputs(B=1, T=40, HQ=2, H=1, K=16, V=16, M=128, tau=1.0)
    wide = {f"{name}@m128": {"BM": tile} for name in (*STATE_KERNELS, "h-carry", "dh-carry")}
    with SETTINGS.override(launch={**SETTINGS.launch, **wide}):
        got = cpu(run(chunk_op, on(cast(x, torch.float32))))
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_walk_plan_counts_slot_tiles(monkeypatch):
    """The grid has a program for every D tile x slot tile; {"BM": 128} is the one-tile kernel; the D tile narrows
    only while D tiles x slot tiles x sequences x heads would leave SMs idle."""
    import gsa.ops.triton.chunk_h as chunk_h
    import gsa.ops.triton.launch as launch
    from gsa.ops.triton.chunks import prepare_chunks

    x = torch.empty(0)
    chunks = prepare_chunks(None, 1, 256, "cpu")
    w = chunk_h.walk_plan(x, "dh", 128, 16, 128, chunks, False)  # the default at M = 128: two 64-wide tiles
    assert (w.opts["BM"], w.grid) == (64, (2 * 2, 16, 1))
    one_tile = {**SETTINGS.launch, "h@m128": {"BM": 128}, "dh@m128": {"BM": 128}}
    with SETTINGS.override(launch=one_tile):
        w = chunk_h.walk_plan(x, "dh", 128, 16, 128, chunks, False)
        assert (w.opts["BM"], w.grid) == (128, (2, 16, 1))
    assert chunk_h.walk_plan(x, "h", 128, 16, 40, chunks, False).grid == (2, 16, 1)  # M = 40: one 64-wide tile
    with SETTINGS.override(launch=slot_tiles(16, 16)):
        assert chunk_h.walk_plan(x, "h", 128, 16, 40, chunks, False).grid == (2 * 3, 16, 1)
    monkeypatch.setattr(launch, "_sm_count", lambda device: 132)
    # 24 heads of 128 on 132 SMs: 96 programs at 64 wide with two slot tiles, 192 at 32; one slot tile: 16 wide
    assert launch.state_tile(128, 24, "cuda", 2) == 32
    assert launch.state_tile(128, 24, "cuda", 1) == 16
    assert chunk_h.walk_plan(x, "h", 128, 24, 128, chunks, False).BD == 32  # two slot tiles (the default)
    with SETTINGS.override(launch=one_tile):
        assert chunk_h.walk_plan(x, "h", 128, 24, 128, chunks, False).BD == 16
