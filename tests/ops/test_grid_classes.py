"""The Triton kernels at every shape class of the benchmark grid (`gsa bench grid`): each distinct (query heads, kv
heads, head dims, slots, dtype) of `gsa.bench.grid.GRID`, at a short length, against the float64 reference.

The grid's classes take different kernel paths (kernel_a's small-head path at head dims <= 128, the state kernels'
tile widths, grouped heads, M up to 128), so a kernel change that only breaks one class shows here. Batch and length
are cut (they change launch counts, not code paths). On the CPU (interpreter) they run in float32 with the heads cut
to at most 2 kv groups; the `gpu` test runs every class's full head count in its own dtype at T = 256, held to
2x the error of the torch backend in that dtype.
"""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

from gsa.bench.grid import GRID  # noqa: E402
from gsa.ops import gated_slot_attention, parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from op_inputs import assert_matches, assert_ratio, cast, cpu, make_inputs, on, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CLASSES = sorted({(s.HQ, s.H, s.K, s.V, s.M, s.dtype) for s in GRID.values()})
IDS = [f"HQ{hq}-H{h}-K{k}-V{v}-M{m}-{dt}" for hq, h, k, v, m, dt in CLASSES]
# On the CPU the dtype does not matter (float32 throughout) and two kv heads stand for many: one case per
# (query heads per kv head, head dims, slots); the head dim 512 ones take 10-15 s each under the interpreter.
CPU_CLASSES = sorted({(hq // h, k, v, m) for hq, h, k, v, m, _ in CLASSES})
CPU_CASES = [pytest.param(c, id=f"G{c[0]}-K{c[1]}-V{c[2]}-M{c[3]}", marks=[pytest.mark.slow] if c[1] >= 512 else [])
             for c in CPU_CLASSES]


def chunk_op(q, k, v, s, g, *, initial_state=None, output_final_state=False):
    """The chunked kernels alone (the front end would send short inputs to the recurrent kernels)."""
    return chunk_gsa(q, k, v, s, g, q.shape[-1] ** -0.5, initial_state, output_final_state, None, False, False)


@pytest.mark.parametrize("cls", CPU_CASES)
def test_grid_class_matches_reference(cls):
    groups, K, V, M = cls
    H = 2  # the kernels' programs per head are independent: two kv heads cover the indexing
    x = make_inputs(B=1, T=70, HQ=H * groups, H=H, K=K, V=V, M=M, tau=4.0)
    ours = run(chunk_op, on(cast(x, torch.float32)))
    assert_matches(cpu(ours), run(parallel_reference, x), tol=2e-5)


# the launch options that split M = 128 into 64-wide slot tiles everywhere (the "@m128" entries emptied; by default
# kernel_ds and the carry and narrow-tile state kernels keep one tile)
SLOT_TILES = {f"{name}@m128": {} for name in ("ds", "dh", "h", "h-narrow", "h-carry", "dh-narrow", "dh-carry")}
WIDE = [pytest.param(c, id=i) for c, i in zip(CLASSES, IDS) if c[4] > 64]


@gpu
@pytest.mark.parametrize("cls", WIDE)
def test_gpu_slot_tiles_within_2x_of_the_torch_backend(cls):
    """The wide-slot classes again with kernel_ds and every state kernel in 64-wide slot tiles."""
    with SETTINGS.override(launch={**SETTINGS.launch, **SLOT_TILES}):
        test_gpu_grid_class_within_2x_of_the_torch_backend(cls)


@gpu
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_gpu_grid_class_within_2x_of_the_torch_backend(cls):
    HQ, H, K, V, M, dt = cls
    x = make_inputs(B=2, T=256, HQ=HQ, H=H, K=K, V=V, M=M, tau=8.0, device="cuda")
    truth = run(parallel_reference, x)
    low = cast(x, DTYPES[dt])
    ours = run(chunk_op, low)
    torch_backend = run(lambda *a, **kw: gated_slot_attention(*a, backend="torch", **kw), cast(x, DTYPES[dt]))
    assert_ratio(ours, torch_backend, truth)
