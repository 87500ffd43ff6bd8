"""SETTINGS.overlap: the op's independent launches on a second CUDA stream (gsa.ops.triton.streams). The same kernels
on the same inputs, so the results must be bitwise those of one stream, across repeated calls whose freed memory the
allocator hands out again (a missing wait, or a temporary let go before the join, would let a later kernel overwrite
a tensor still being read)."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk as chunk  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from gsa.ops.triton.streams import join, launching, side_stream  # noqa: E402
from op_inputs import cast, flatten, make_inputs, on, run  # noqa: E402

gpu = pytest.mark.gpu


def chunk_op(q, k, v, s, g, *, initial_state=None, output_final_state=False, cu_seqlens=None, keep_states=False):
    return chunk_gsa(q, k, v, s, g, 0.3, initial_state, output_final_state, cu_seqlens, keep_states, False)


def test_no_side_stream_off_cuda_when_off_or_for_a_small_op():
    """Each decided before any CUDA call (this runs without a GPU)."""
    assert side_stream(torch.device("cpu"), 1 << 30) is None
    with SETTINGS.override(overlap=False):
        assert side_stream(torch.device("cuda"), 1 << 30) is None
    with SETTINGS.override(overlap_min_rows=100):
        assert side_stream(torch.device("cuda"), 99) is None
    x = torch.ones(3)
    with launching(None, x, None):
        y = x + 1
    join(None)
    assert y.tolist() == [2.0, 2.0, 2.0]


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["dense", "keep_states", "packed", "segments"])
def test_gpu_overlap_is_bitwise_one_stream(case, dtype, monkeypatch):
    kw, segments = {}, None
    if case == "packed":
        lengths = [3, 64 * 4 + 9, 64 * 2 + 1]
        x = make_inputs(B=1, T=sum(lengths), HQ=4, H=2, K=80, V=72, M=24, N=len(lengths), tau=1.0)
        kw["cu_seqlens"] = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda",
                                        dtype=torch.int32)
    elif case == "segments":  # long walks split into segments, with their carry kernels on the side stream too
        x, segments = make_inputs(B=1, T=64 * 9 + 5, HQ=2, H=2, K=64, V=64, M=16, tau=2.0), 3
    else:
        x = make_inputs(B=2, T=64 * 3 + 7, HQ=4, H=2, K=80, V=72, M=24, tau=1.0)
        kw["keep_states"] = case == "keep_states"
    x = on(cast(x, dtype))
    uses = []
    real = chunk.side_stream

    def counted(device, rows):
        side = real(device, rows)
        uses.append(side is not None)
        return side

    monkeypatch.setattr(chunk, "side_stream", counted)
    with SETTINGS.override(state_segments=segments, overlap_min_rows=0):  # these small ops take it too
        with SETTINGS.override(overlap=False):
            want = {n: t.clone() for n, t in flatten(run(chunk_op, x, **kw)).items()}
        assert uses and not any(uses)
        uses.clear()
        for i in range(4):  # memory freed by one call is handed out again in the next
            junk = [torch.randn(1 << (16 + i), device="cuda") for _ in range(3)]
            got = flatten(run(chunk_op, x, **kw))
            del junk
            assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)
        assert uses and all(uses)
    torch.cuda.synchronize()


@gpu
def test_gpu_op_in_a_cuda_graph_keeps_one_stream():
    """Captured in a CUDA graph (forward, no autograd) at a size that takes two streams eagerly, the op keeps one
    stream and replays to the eager result."""
    inputs = make_inputs(B=2, T=64 * 3 + 7, HQ=4, H=2, K=80, V=72, M=24, tau=1.0)
    x = {n: None if t is None else t.detach() for n, t in on(cast(inputs, torch.bfloat16)).items()}
    args = [x[n] for n in ("q", "k", "v", "s", "g")]
    init = (x["hk0"], x["hv0"])
    with SETTINGS.override(overlap_min_rows=0):
        want = chunk_op(*args, initial_state=init, output_final_state=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph requires
            chunk_op(*args, initial_state=init, output_final_state=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            got = chunk_op(*args, initial_state=init, output_final_state=True)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(got[0], want[0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
