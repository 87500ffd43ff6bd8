"""kernel_h and kernel_dh with the launch option "SPLIT" (chunk_h.chunk_gsa_fwd_kernel_h,
chunk_dh.chunk_gsa_bwd_kernel_dh: the chunks that end inside their sequence walked without masks, a partial last
chunk with them): the whole op, forward, final states and
every gradient against the float64 reference, at whole tiles (EVEN: no masks over D and slots either) and partial
ones, packed sequences whose last chunks are whole, partial or one token, and segmented walks; and the option's
check."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_dh as chunk_dh  # noqa: E402
import gsa.ops.triton.chunk_h as chunk_h  # noqa: E402
from gsa.ops import parallel_reference, recurrent_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from launch_runs import SCALE, chunk_op, torch_op  # noqa: E402
from op_inputs import assert_matches, assert_ratio, cast, cpu, make_inputs, on, run  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# packed sequences: a whole chunk, one token, a whole and a partial chunk (64 + 64 + 1 + 100 tokens)
CU = torch.tensor([0, 64, 65, 165])


def split_launch(names=("h", "dh")):
    """SETTINGS.launch with SPLIT on for the walks `names` (their other options kept)."""
    return {**SETTINGS.launch, **{n: {**SETTINGS.launch.get(n, {}), "SPLIT": True} for n in names}}


@pytest.mark.parametrize("K, V, M, even", [(32, 32, 16, True), (20, 36, 12, False)])
@pytest.mark.parametrize("segments", [None, 2])
def test_split_walk_matches_reference(K, V, M, even, segments, monkeypatch):
    """K = V = 32 and M = 16 are whole tiles (one D tile of 32, one slot tile of 16: EVEN); 20 / 36 / 12 are not.
    segments = 2: each sequence's walk in two segments with the carry kernel (SETTINGS.state_segments)."""
    x = make_inputs(B=1, T=165, HQ=2, H=2, K=K, V=V, M=M, N=3, tau=2.0)
    walks = []
    for module, kernel_name in ((chunk_h, "chunk_gsa_fwd_kernel_h"), (chunk_dh, "chunk_gsa_bwd_kernel_dh")):
        def record(kernel, grid, real=module.launch, kernel_name=kernel_name):
            go = real(kernel, grid)
            if kernel.__name__ != kernel_name:  # the carry kernels
                return go
            return lambda *a, **k: walks.append((kernel_name, k["SPLIT"], k["EVEN"])) or go(*a, **k)

        monkeypatch.setattr(module, "launch", record)
    with SETTINGS.override(state_segments=segments, segment_dh=segments is not None, prewarm=False,
                           launch=split_launch()):
        got = run(chunk_op, on(cast(x, torch.float32)), cu_seqlens=CU.to(DEVICE, torch.int32))
    # two forward walks, two recomputed in the backward, two reverse walks
    assert sorted(walks) == sorted([("chunk_gsa_fwd_kernel_h", True, even)] * 4
                                   + [("chunk_gsa_bwd_kernel_dh", True, even)] * 2), walks
    assert_matches(cpu(got), run(parallel_reference, x, scale=0.3, cu_seqlens=CU), tol=2e-5)


def test_split_walk_on_whole_batches_matches_the_default():
    """B 2 T 130 (two whole chunks and one of 2 tokens a sequence): SPLIT and the default walk agree to float32
    rounding, outputs and gradients (in the interpreter; on the GPU they differ by the 16-bit outputs' rounding: the
    two forms' instructions differ)."""
    x = on(cast(make_inputs(B=2, T=130, HQ=2, H=2, K=32, V=32, M=16), torch.float32))
    want = run(chunk_op, x)
    with SETTINGS.override(launch=split_launch()):
        got = run(chunk_op, x)
    assert_matches(got, want, tol=1e-6)


@pytest.mark.parametrize("bad", [1, "yes"])
@pytest.mark.parametrize("name", ["h", "dh"])
def test_split_must_be_a_bool(name, bad):
    x = on(cast(make_inputs(B=1, T=20, HQ=2, H=2, K=32, V=32, M=16), torch.float32))  # 32-wide D tiles: "h", "dh"
    launch = {**SETTINGS.launch, name: {**SETTINGS.launch.get(name, {}), "SPLIT": bad}}
    with SETTINGS.override(launch=launch):
        with pytest.raises(ValueError, match=rf"SETTINGS.launch\['{name}'\]\['SPLIT'\] .* a bool, got {bad!r}"):
            run(chunk_op, x)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [
    dict(B=2, T=130, HQ=4, H=4, K=128, V=128, M=64),  # whole D and slot tiles (EVEN), a 2-token last chunk
    dict(B=1, T=100, HQ=8, H=2, K=64, V=96, M=32),
    dict(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64),  # 32 chunks: state rounding has time to accumulate
    dict(B=2, T=130, HQ=2, H=2, K=160, V=160, M=64),  # partial D tiles
    dict(B=4, T=130, HQ=32, H=32, K=128, V=128, M=64),  # 256 programs a walk: 64-wide D tiles ("h", "dh")
])
def test_gpu_split_walks_within_2x_of_the_torch_backend(dtype, shape):
    """Both walks with SPLIT, every walk entry, in bf16 and fp16: within 2x of the torch backend's error against the
    float64 recurrence (as tests/ops/test_triton.py's default-launch test)."""
    x = on(make_inputs(**shape, tau=4.0), "cuda")
    truth = run(recurrent_reference, x, scale=SCALE)
    baseline = run(torch_op, on(cast(x, dtype), "cuda"))
    with SETTINGS.override(launch=split_launch(("h", "h-narrow", "dh", "dh-narrow"))):
        got = run(chunk_op, on(cast(x, dtype), "cuda"))
    assert_ratio(got, baseline, truth, ratio=2.0, floor=1e-5)


def test_the_forward_walk_takes_split_by_default():
    """SETTINGS' defaults: SPLIT for kernel_h's "h" entry (EVEN at whole tiles), not for kernel_dh's "dh"."""
    from gsa.ops.triton.chunks import prepare_chunks

    x = torch.empty(2 * 130, 4, 128)
    chunks = prepare_chunks(None, 2, 130, x.device)
    assert chunk_h.walk_plan(x, "h", 128, 4, 64, chunks, True).split == dict(SPLIT=True, EVEN=True)
    assert chunk_h.walk_plan(x, "h", 100, 4, 64, chunks, True).split == dict(SPLIT=True, EVEN=False)
    assert chunk_h.walk_plan(x, "dh", 128, 4, 64, chunks, True).split == dict(SPLIT=False, EVEN=False)
