"""kernel_a and kernel_ds with one program a chunk (launch option WHOLE: SETTINGS.launch "a", "a-small", "dp",
"dp-small", chunk_a.chunk_gsa_fwd_kernel_a_whole; "ds", chunk_ds.chunk_gsa_bwd_kernel_ds): the whole op, forward,
final states and every gradient against the float64 reference, through the chunk-wide factored block (a decay span
under the bound, tiles.chunk_span_max) and through the sub-block walk (a larger span, with factored and pairwise
diagonal sub-blocks), both reads, grouped heads with and without GROUP, packed sequences with partial and one-token
chunks, head dims over 128 (two D tiles); the launches recorded to show the chunk grid ran. kernel_ds also in slot
tiles (each tile tests its own span); SETTINGS.factor_span = inf never factors a chunk past the bound."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_a as chunk_a  # noqa: E402
import gsa.ops.triton.chunk_ds as chunk_ds  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from launch_runs import chunk_op, kernel_a_entries, recorded_run  # noqa: E402
from op_inputs import assert_matches, cast, decay_spans, make_inputs, on, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WHOLE = "chunk_gsa_fwd_kernel_a_whole"
DS = "chunk_gsa_bwd_kernel_ds"


def whole_run(x, monkeypatch, group=None, ds=None, **kw):
    """run(chunk_op, ...) on float32 copies of x with WHOLE on for kernel_a, a whole chunk a program (RB 0; row
    blocks: tests/ops/test_row_blocks.py), and GROUP = `group` unless None, and for kernel_ds (its entry updated by
    `ds` unless None), recording the launches of both as (kernel name, grid)."""
    launch = kernel_a_entries(WHOLE=True, RB=0, **({} if group is None else {"GROUP": group}))
    launch["ds"] = {**SETTINGS.launch.get("ds", {}), "WHOLE": True, **(ds or {})}
    return recorded_run(x, monkeypatch, [chunk_a, chunk_ds], ("kernel", "grid"), launch, **kw)


def launches_of(heads, kv_heads, NT, slot_tiles=1):
    """What whole_run records: kernel_a's forward, then kernel_a's backward and kernel_ds, a program a chunk."""
    return [(WHOLE, chunk_grid(heads, NT))] * 2 + [(DS, chunk_grid(kv_heads * slot_tiles, NT))]


def chunk_grid(heads, NT):
    return (heads * NT,)


# Paths: "chunk" factors every chunk as one block (gentle gates, tau = 8: every chunk's span under the default
# SETTINGS.factor_span); "sub-blocks" sends every chunk to the sub-block walk with factored diagonal sub-blocks
# (strong gates, tau = 1, and a bound between the sub-blocks' spans and the chunks'); "pairwise" walks them pairwise
# (a bound below every span). test_the_three_paths_are_taken checks those spans.
PATHS = ("chunk", "sub-blocks", "pairwise")


def gates_spans(x):
    """(largest sub-block span, smallest and largest chunk span) of x's gates over full chunks and their 16-row
    sub-blocks (the kernels' spans: Gl_first - Gl_last, max over slots)."""
    g = x["g"]
    chunk_span = decay_spans(g, 64)
    sub_span = decay_spans(g[:, : g.shape[1] // 64 * 64], 16).max().item()
    return sub_span, chunk_span.min().item(), chunk_span.max().item()


def path_inputs(path, **shape):
    """(inputs, factor_span) that send kernel_a's chunks down `path`."""
    x = make_inputs(**shape, tau=8.0 if path == "chunk" else 1.0)
    if path == "chunk":
        return x, SETTINGS.factor_span
    if path == "pairwise":
        return x, -1.0
    sub_span, chunk_min, _ = gates_spans(x)
    return x, (sub_span + chunk_min) / 2


def test_the_three_paths_are_taken():
    _, _, chunk_max = gates_spans(path_inputs("chunk", B=2, T=130, H=2, M=40)[0])
    assert 0 < chunk_max < SETTINGS.factor_span, chunk_max
    sub_span, chunk_min, _ = gates_spans(path_inputs("sub-blocks", B=2, T=130, H=2, M=40)[0])
    assert 0 < sub_span < chunk_min, (sub_span, chunk_min)
    sub_span, chunk_min, _ = gates_spans(path_inputs("sub-blocks", B=1, T=100, H=2, M=24)[0])
    assert 0 < sub_span < chunk_min, (sub_span, chunk_min)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("slot_read", ["softmax", "linear"])
def test_whole_chunk_programs_match_reference(path, slot_read, monkeypatch):
    """One query head a kv head, M = 40, T = 130 (a partial third chunk), K = 16, V = 12."""
    x, span = path_inputs(path, B=2, T=130, HQ=2, H=2, K=16, V=12, M=40)
    with SETTINGS.override(factor_span=span):
        got, launches = whole_run(x, monkeypatch, slot_read=slot_read)
    assert launches == launches_of(2, 2, 6)
    assert_matches(got, run(parallel_reference, x, scale=0.3, slot_read=slot_read), tol=2e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("group", [False, True])
def test_whole_chunk_programs_with_grouped_heads(group, path, monkeypatch):
    """Three query heads a kv head over 2 kv heads: a program a query head, or (GROUP) a kv head."""
    x, span = path_inputs(path, B=1, T=100, HQ=6, H=2, K=20, V=16, M=24)
    with SETTINGS.override(factor_span=span):
        got, launches = whole_run(x, monkeypatch, group=group)
    assert launches == launches_of(2 if group else 6, 2, 2)
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


@pytest.mark.parametrize("path", ["chunk", "pairwise"])
def test_whole_chunk_programs_over_packed_sequences(path, monkeypatch):
    """Packed sequences of 1, 64, 37 and 80 tokens: a one-token chunk, a full one, partial ones."""
    cu = torch.tensor([0, 1, 65, 102, 182])
    x, span = path_inputs(path, B=1, T=182, HQ=2, H=2, K=16, V=20, M=40, N=4)
    with SETTINGS.override(factor_span=span):
        got, launches = whole_run(x, monkeypatch, cu_seqlens=cu.to(DEVICE, torch.int32))
    assert launches == launches_of(2, 2, 5)
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=cu), tol=2e-5)


def test_whole_chunk_programs_at_wide_heads(monkeypatch):
    """Head dims over 128 (kernel_a's names "a" and "dp": three 64-wide D tiles, the last partial); the initial
    states enter and the final states' gradients flow back (op_inputs.run)."""
    x = make_inputs(B=1, T=70, HQ=2, H=2, K=144, V=136, M=24)
    got, launches = whole_run(x, monkeypatch)
    assert launches == launches_of(2, 2, 2)
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


@pytest.mark.parametrize("path", PATHS)
def test_whole_chunk_ds_in_slot_tiles(path, monkeypatch):
    """kernel_ds in 16-wide slot tiles over M = 40 (three tiles, the last partial): each tile decides its own path."""
    x, span = path_inputs(path, B=2, T=130, HQ=2, H=2, K=16, V=12, M=40)
    with SETTINGS.override(factor_span=span):
        got, launches = whole_run(x, monkeypatch, ds={"BM": 16})
    assert launches == launches_of(2, 2, 6, slot_tiles=3)
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


@pytest.mark.parametrize("name", ["a-small", "dp-small", "a-small@gqa", "ds"])
def test_whole_must_be_a_bool(name):
    x = on(cast(make_inputs(B=1, T=20, HQ=4, H=2, K=16, V=16, M=24), torch.float32))
    with SETTINGS.override(launch={**SETTINGS.launch, name: {"WHOLE": 1}}):
        with pytest.raises(ValueError, match=rf"SETTINGS.launch\['{name}'\]\['WHOLE'\] .* a bool, got 1"):
            run(chunk_op, x)


def test_an_infinite_factor_span_never_factors_a_chunk_past_the_bound(monkeypatch):
    """SETTINGS.factor_span = inf factors every sub-block (a test knob); chunks of strong gates (span ~90) still take
    the sub-block walk, where a chunk-wide factor would overflow float32."""
    x, _ = path_inputs("sub-blocks", B=2, T=130, HQ=2, H=2, K=16, V=12, M=40)
    assert gates_spans(x)[1] > 2 * chunk_a.chunk_span_max()
    with SETTINGS.override(factor_span=float("inf")):
        got, launches = whole_run(x, monkeypatch)
    assert launches == launches_of(2, 2, 6)
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)
