"""kernel_o, kernel_dx, and kernel_a's chunk programs, in row blocks (launch option "RB": rows of a chunk a program;
chunks.row_block): the whole op, forward, final states and every gradient (kernel_o also gives dq, kernel_a's
backward launch dp) against the float64 reference, with several D tiles a program, grouped heads, blocks that factor
and blocks that walk their sub-blocks, packed sequences and partial chunks; and the option's checks."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_a as chunk_a  # noqa: E402
import gsa.ops.triton.chunk_dx as chunk_dx  # noqa: E402
import gsa.ops.triton.chunk_o as chunk_o  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from gsa.ops.triton.chunks import BT, row_block  # noqa: E402
from launch_runs import kernel_a_entries, recorded_run  # noqa: E402
from op_inputs import assert_matches, make_inputs, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# kernel_a's tests: packed sequences of 1, 64 and 70 tokens (row blocks past each end)
LENGTHS = (1, 64, 70)
CU = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()])
NT = sum(-(-n // BT) for n in LENGTHS)


@pytest.mark.parametrize("rb", [16, BT // 2, 0])
def test_row_blocks_match_reference(rb, monkeypatch):
    """K = 48, V = 32 in 16-wide tiles, two a program (K's second program half past the end); 2 query heads a kv
    head; packed sequences of 1, 64 and 40 tokens (row blocks past each end)."""
    cu = torch.tensor([0, 1, 65, 105])
    x = make_inputs(B=1, T=105, HQ=4, H=2, K=48, V=32, M=20, N=3, tau=1.0)
    launch = {**SETTINGS.launch, "o": {"ND": 2, "BD": 16, "RB": rb}}
    got, launches = recorded_run(x, monkeypatch, [chunk_o], ("RB", "grid"), launch,
                                 cu_seqlens=cu.to(DEVICE, torch.int32))
    nt = 1 + 1 + 1  # chunks: 1 token, 64 tokens, 40 tokens
    rows = rb or BT  # 0: the whole chunk
    blocks = BT // rows
    assert sorted(launches) == sorted([(rows, (1 * blocks * 4 * nt,)), (rows, (2 * blocks * 4 * nt,))])  # o, dq
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=cu), tol=2e-5)


@pytest.mark.parametrize("heads", [(4, 2), (2, 2)])
@pytest.mark.parametrize("rb", [16, BT // 2, 0])
def test_kernel_dx_row_blocks_match_reference(rb, heads, monkeypatch):
    """kernel_dx (dk and dv) in row blocks of key rows: K = 48, V = 32 in 16-wide tiles, two a program; 2 query heads a
    kv head or one; packed sequences of 1, 130 and 40 tokens (row blocks past each end; the second's chunk
    boundaries take dg's boundary term, whose parts the first row block writes)."""
    HQ, H = heads
    cu = torch.tensor([0, 1, 131, 171])
    x = make_inputs(B=1, T=171, HQ=HQ, H=H, K=48, V=32, M=20, N=3, tau=1.0)
    launch = {**SETTINGS.launch, "dx": {**SETTINGS.launch["dx"], "ND": 2, "BD": 16, "RB": rb}}
    got, launches = recorded_run(x, monkeypatch, [chunk_dx], ("RB", "grid"), launch,
                                 cu_seqlens=cu.to(DEVICE, torch.int32))
    nt = 1 + 3 + 1  # chunks: 1 token, 130 tokens, 40 tokens
    rows = rb or BT
    blocks = BT // rows
    assert sorted(launches) == sorted([(rows, (1 * blocks * H * nt,)), (rows, (2 * blocks * H * nt,))])  # dv, dk
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=cu), tol=2e-5)


@pytest.mark.parametrize("bad", [8, BT * 2, 24, -16, True, "32"])
def test_bad_row_blocks_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=rf"SETTINGS.launch\['o'\]\['RB'\] \(rows a program\) must be 0 \(the whole "
                                         rf"chunk\) or divide the chunk length {BT} and be a multiple of 16, "
                                         rf"got {bad!r}"):
        row_block("o", {"RB": bad}, 16)


def test_row_block_default_and_whole_chunk():
    assert row_block("o", {}, 16) == BT and row_block("o", {"RB": 0}, 16) == BT
    assert row_block("o", {"RB": 16}, 16) == 16


@pytest.mark.parametrize("span", [pytest.param(-1.0, id="pairwise"), pytest.param(None, id="mixed"),
                                  pytest.param(float("inf"), id="factored")])
@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("rb", [16, BT // 2])
def test_kernel_a_row_blocks_match_reference(rb, group, span, monkeypatch):
    """kernel_a's chunk programs (WHOLE) in row blocks, one a query head or a kv head (GROUP): blocks that factor
    (span inf: these gates' 32-row blocks span 10-13, under the bound of 30), that never do and walk their sub-blocks
    pairwise (-1), or some of each (a bound inside the blocks' spans: 11 at 32 rows, 6 at 16, whose spans are 5-7);
    packed sequences of 1, 64 and 70 tokens, 2 query heads a kv head."""
    x = make_inputs(B=1, T=sum(LENGTHS), HQ=4, H=2, K=20, V=24, M=12, N=3, tau=4.0)
    if span is None:
        span = 6.0 if rb == 16 else 11.0
    with SETTINGS.override(factor_span=span):
        got, launches = recorded_run(x, monkeypatch, [chunk_a], ("kernel", "RB", "grid"),
                                     kernel_a_entries(WHOLE=True, GROUP=group, RB=rb),
                                     cu_seqlens=CU.to(DEVICE, torch.int32))
    heads = 2 if group else 4
    assert launches == [("chunk_gsa_fwd_kernel_a_whole", rb, (BT // rb * heads * NT,))] * 2
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=CU), tol=2e-5)


def test_row_blocks_of_kernel_a_need_its_chunk_programs():
    with SETTINGS.override(launch={**SETTINGS.launch, "a": {"WHOLE": False, "RB": 32}}):
        with pytest.raises(ValueError, match=r"SETTINGS.launch\['a'\]\['RB'\] \(rows a program\) applies to the chunk "
                                             r"programs \(WHOLE\) only"):
            chunk_a.kernel_a_launch("a", H=4, HQ=4, M=64, NT=3)
