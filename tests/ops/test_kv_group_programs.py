"""kernel_a's sub-block programs with one program per kv head for all its query heads (launch option GROUP,
SETTINGS.launch "a", "a-small", "dp", "dp-small"): the whole op, forward, final states and every gradient against
the float64 reference, with 2 and 4 query heads a kv head, the softmax and linear reads, factored and pairwise
diagonal sub-blocks, packed sequences, M not a power of two and head dims over 128; the launches recorded to show
the kv-head grid ran."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_a as chunk_a  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from gsa.ops.triton.chunks import BC, BT  # noqa: E402
from launch_runs import chunk_op, kernel_a_entries, recorded_run  # noqa: E402
from op_inputs import assert_matches, cast, make_inputs, on, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def with_group(group):
    """SETTINGS.launch with GROUP = `group` and WHOLE off for kernel_a (the sub-block programs;
    tests/ops/test_whole_chunk_programs.py has the chunk programs, tests/ops/test_row_blocks.py their row blocks)."""
    return kernel_a_entries(GROUP=group, WHOLE=False, RB=0)


def grouped_run(x, monkeypatch, **kw):
    """run(chunk_op, ...) on float32 copies of x with GROUP on, and kernel_a's launches as (grid, GROUP, BACKWARD)."""
    return recorded_run(x, monkeypatch, [chunk_a], ("grid", "GROUP", "BACKWARD"), with_group(True), **kw)


def kv_head_grid(H, NT):
    return (BT // BC * H * NT,)


@pytest.mark.parametrize("span", [pytest.param(-1.0, id="pairwise"), pytest.param(float("inf"), id="factored")])
@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
@pytest.mark.parametrize("G", [2, 4])
def test_grouped_programs_match_reference(G, slot_read, span, monkeypatch):
    """G query heads a kv head over 2 kv heads, M = 40, a partial last chunk (T = 70: 2 chunks a sequence)."""
    x = make_inputs(B=2, T=70, HQ=2 * G, H=2, K=16, V=12, M=40, tau=1.0)
    with SETTINGS.override(factor_span=span):
        got, launches = grouped_run(x, monkeypatch, slot_read=slot_read)
    assert launches == [(kv_head_grid(2, 4), True, False), (kv_head_grid(2, 4), True, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read), tol=2e-5)


@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_grouped_programs_over_packed_sequences(slot_read, monkeypatch):
    """Packed sequences of 1, 64 and 37 tokens (an empty sub-block past each end), 3 query heads a kv head."""
    cu = torch.tensor([0, 1, 65, 102])
    x = make_inputs(B=1, T=102, HQ=6, H=2, K=16, V=20, M=40, N=3, tau=1.0)
    got, launches = grouped_run(x, monkeypatch, slot_read=slot_read, cu_seqlens=cu.to(DEVICE, torch.int32))
    assert launches == [(kv_head_grid(2, 3), True, False), (kv_head_grid(2, 3), True, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read, cu_seqlens=cu), tol=2e-5)


def test_one_query_head_a_kv_head_keeps_the_query_head_grid(monkeypatch):
    """With HQ == H there is nothing to share: GROUP is dropped and the launch is the default one."""
    x = make_inputs(B=1, T=20, HQ=2, H=2, K=16, V=16, M=24)
    got, launches = grouped_run(x, monkeypatch)
    assert launches == [((BT // BC * 2 * 1,), False, False), ((BT // BC * 2 * 1,), False, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


@pytest.mark.parametrize("name", ["a-small", "dp-small", "a-small@gqa", "dp-small@m128"])
@pytest.mark.parametrize("group", [1, "yes"])
def test_group_must_be_a_bool(name, group):
    x = on(cast(make_inputs(B=1, T=20, HQ=4, H=2, K=16, V=16, M=24), torch.float32))
    with SETTINGS.override(launch={**SETTINGS.launch, name: {"GROUP": group}}):
        with pytest.raises(ValueError, match=rf"SETTINGS.launch\['{name}'\]\['GROUP'\] .* a bool, got {group!r}"):
            run(chunk_op, x)


def test_grouped_programs_at_wide_heads(monkeypatch):
    """Head dims over 128, where kernel_a's launches take the names "a" and "dp" (three 64-wide D tiles)."""
    x = make_inputs(B=1, T=20, HQ=4, H=2, K=144, V=136, M=24, tau=1.0)
    got, launches = grouped_run(x, monkeypatch)
    assert launches == [(kv_head_grid(2, 1), True, False), (kv_head_grid(2, 1), True, True)]
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)
