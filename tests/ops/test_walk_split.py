"""kernel_h with the launch option "SPLIT" (chunk_h.chunk_gsa_fwd_kernel_h: the chunks that end inside their
sequence walked without masks, a partial last chunk after them with them): the whole op, forward, final states and
every gradient against the float64 reference, at whole tiles (EVEN: no masks over D and slots either) and partial
ones, packed sequences whose last chunks are whole, partial or one token, and segmented walks; and the option's
check."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_h as chunk_h  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from launch_runs import chunk_op  # noqa: E402
from op_inputs import assert_matches, cast, cpu, make_inputs, on, run  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# packed sequences: a whole chunk, one token, a whole and a partial chunk (64 + 64 + 1 + 100 tokens)
CU = torch.tensor([0, 64, 65, 165])


def split_launch(**extra):
    return {**SETTINGS.launch, "h": {**SETTINGS.launch.get("h", {}), "SPLIT": True, **extra}}


@pytest.mark.parametrize("K, V, M, even", [(32, 32, 16, True), (20, 36, 12, False)])
@pytest.mark.parametrize("segments", [None, 2])
def test_split_walk_matches_reference(K, V, M, even, segments, monkeypatch):
    """K = V = 32 and M = 16 are whole tiles (one D tile of 32, one slot tile of 16: EVEN); 20 / 36 / 12 are not.
    segments = 2: each sequence's walk in two segments with the carry kernel (SETTINGS.state_segments)."""
    x = make_inputs(B=1, T=165, HQ=2, H=2, K=K, V=V, M=M, N=3, tau=2.0)
    walks = []
    real = chunk_h.launch

    def record(kernel, grid):
        go = real(kernel, grid)
        if kernel is not chunk_h.chunk_gsa_fwd_kernel_h:  # its carry kernel
            return go
        return lambda *a, **k: walks.append((k["SPLIT"], k["EVEN"])) or go(*a, **k)

    monkeypatch.setattr(chunk_h, "launch", record)
    with SETTINGS.override(state_segments=segments, prewarm=False, launch=split_launch()):
        got = run(chunk_op, on(cast(x, torch.float32)), cu_seqlens=CU.to(DEVICE, torch.int32))
    assert walks == [(True, even)] * 4  # two forward walks, two recomputed in the backward
    assert_matches(cpu(got), run(parallel_reference, x, scale=0.3, cu_seqlens=CU), tol=2e-5)


def test_split_walk_on_whole_batches_matches_the_default():
    """B 2 T 130 (two whole chunks and one of 2 tokens a sequence): SPLIT and the default walk agree to float32
    rounding, outputs and gradients."""
    x = on(cast(make_inputs(B=2, T=130, HQ=2, H=2, K=32, V=32, M=16), torch.float32))
    want = run(chunk_op, x)
    with SETTINGS.override(launch=split_launch()):
        got = run(chunk_op, x)
    assert_matches(got, want, tol=1e-6)


@pytest.mark.parametrize("bad", [1, "yes"])
def test_split_must_be_a_bool(bad):
    x = on(cast(make_inputs(B=1, T=20, HQ=2, H=2, K=32, V=32, M=16), torch.float32))  # 32-wide D tiles: "h"
    with SETTINGS.override(launch=split_launch(SPLIT=bad)):
        with pytest.raises(ValueError, match=rf"SETTINGS.launch\['h'\]\['SPLIT'\] .* a bool, got {bad!r}"):
            run(chunk_op, x)
