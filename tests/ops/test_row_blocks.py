"""kernel_o in row blocks (launch option "RB": rows of a chunk a program; chunk_o.row_block): the whole op, forward,
final states and every gradient (kernel_o also gives dq) against the float64 reference, with several D tiles a
program, grouped heads, packed sequences and partial chunks; and the option's checks."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_o as chunk_o  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from gsa.ops.triton.chunks import BT  # noqa: E402
from launch_runs import recorded_run  # noqa: E402
from op_inputs import assert_matches, make_inputs, run  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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


@pytest.mark.parametrize("bad", [8, BT * 2, 24, -16, True, "32"])
def test_bad_row_blocks_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=rf"SETTINGS.launch\['o'\]\['RB'\] \(rows a program\) must be 0 \(the whole "
                                         rf"chunk\) or divide the chunk length {BT} and be >= 16, got {bad!r}"):
        chunk_o.row_block("o", {"RB": bad})


def test_row_block_default_and_whole_chunk():
    assert chunk_o.row_block("o", {}) == BT and chunk_o.row_block("o", {"RB": 0}) == BT
    assert chunk_o.row_block("o", {"RB": 16}) == 16
