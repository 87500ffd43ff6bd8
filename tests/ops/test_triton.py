"""The triton backend against the float64 references: forward, final states and every gradient.

On a machine without CUDA these run under TRITON_INTERPRET=1 (set by tests/conftest.py) with float32/float16 and
tiny shapes; the `gpu` tests at the bottom use production shapes, bf16 and torch.compile.
"""

import functools

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

from gsa.ops import gated_slot_attention, parallel_reference, recurrent_reference  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa, fused_recurrent_gsa  # noqa: E402
from op_inputs import assert_matches, assert_ratio, cast, cpu, make_inputs, on, rel_err, run  # noqa: E402

# Masked-out lanes may hold exp overflow (never stored); the interpreter warns about it, the GPU does not.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def chunk_op(q, k, v, s, g, *, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
             keep_states=None, slot_read="softmax"):
    """The chunked kernels alone (no front-end), whatever T is."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return chunk_gsa(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, keep_states,
                     slot_read == "linear")


def triton_op(*args, **kw):
    return gated_slot_attention(*args, backend="triton", **kw)


@pytest.mark.parametrize("shape", [
    dict(B=2, T=65, HQ=4, H=2, K=20, V=12, M=7, tau=1.0),
    dict(B=1, T=63, HQ=2, H=2, K=48, V=20, M=24, tau=0.5, init_state=False),
    dict(B=2, T=1, HQ=2, H=1, K=16, V=16, M=16, tau=1.0),
])
def test_chunk_float32_matches_reference(shape):
    x = make_inputs(**shape)
    assert_matches(cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3)), run(parallel_reference, x, scale=0.3),
                   tol=2e-5)


@pytest.mark.parametrize("shape", [
    dict(B=2, T=65, HQ=4, H=2, K=20, V=12, M=7, tau=1.0),
    dict(B=1, T=70, HQ=2, H=2, K=16, V=20, M=24, tau=0.5, N=3),
])
def test_chunk_linear_slot_read_matches_reference(shape):
    """The no-softmax ablation (slot_read="linear") through the chunked kernels: forward, states, every gradient."""
    x = make_inputs(**shape)
    cu = torch.tensor([0, 9, 40, 70]) if shape.get("N") else None
    got = cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3, slot_read="linear",
                  cu_seqlens=None if cu is None else cu.to(DEVICE)))
    ref = run(parallel_reference, x, scale=0.3, slot_read="linear", cu_seqlens=cu)
    assert_matches(got, ref, tol=2e-5)
    assert rel_err(got[0], run(parallel_reference, x, scale=0.3, cu_seqlens=cu)[0]) > 1e-3  # not the softmax read


@pytest.mark.parametrize("inplace", [False, True])
def test_fused_recurrent_linear_slot_read(inplace):
    x = make_inputs(B=2, T=3, HQ=4, H=2, K=20, V=36, M=24, tau=1.0, init_state=True)
    d = {n: None if t is None else t.detach() for n, t in x.items()}
    ref_o, ref_st = recurrent_reference(d["q"], d["k"], d["v"], d["s"], d["g"], scale=0.4,
                                        initial_state=(d["hk0"], d["hv0"]), output_final_state=True,
                                        slot_read="linear")
    f = {n: t.float().to(DEVICE).contiguous() for n, t in d.items()}
    state = (f["hk0"].clone(), f["hv0"].clone())
    o, st = triton_op(f["q"], f["k"], f["v"], f["s"], f["g"], scale=0.4, initial_state=state,
                      output_final_state=True, slot_read="linear", inplace_state=inplace)
    for got, ref in ((o, ref_o), (st[0], ref_st[0]), (st[1], ref_st[1])):
        assert rel_err(got.cpu(), ref) < 2e-6
    assert (st[0] is state[0]) == inplace


def test_state_kernels_split_into_narrow_tiles(monkeypatch):
    """The sequential state kernels over several narrow D tiles (as on a GPU with few sequences) still match."""
    monkeypatch.setattr(SETTINGS, "state_tile_max", 16)  # K = 48, V = 40: three tiles each
    x = make_inputs(B=1, T=130, HQ=4, H=2, K=48, V=40, M=24, tau=1.0)
    assert_matches(cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3)), run(parallel_reference, x, scale=0.3),
                   tol=2e-5)


def test_large_slot_scores_keep_float32_accuracy():
    """q x 30: slot scores A1 in the tens to hundreds, where dG's A1 * dA1 term multiplies any relative error of
    softmax(A1) by |A1|. The readers rebuild softmax(A1) from each row's max and log-sum as kernel_a stored them
    (tiles.softmax_and_stats), which keeps the usual float32 tolerance here (8.7e-6 at most); from a single stored
    log-sum-exp, whose rounding grows with |A1|, k, s and g came to 2.1-2.2e-5."""
    torch.manual_seed(0)
    x = make_inputs(B=1, T=130, HQ=2, H=2, K=32, V=32, M=16, tau=2.0)
    with torch.no_grad():
        x["q"].mul_(30.0)
    assert_matches(cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3)), run(parallel_reference, x, scale=0.3),
                   tol=2e-5)


@pytest.mark.parametrize("segments", [None, 2])
def test_state_kernels_in_wide_tiles(segments, monkeypatch):
    """D tiles of 128 in the state kernels, whole walks (SETTINGS.state_tile_max = 128) and walks in segments
    (SETTINGS.segment_tile_max = 128, both directions): K = 160, V = 136, a full tile and a partial one each."""
    if segments is None:
        monkeypatch.setattr(SETTINGS, "state_tile_max", 128)
    else:
        monkeypatch.setattr(SETTINGS, "state_segments", segments)
        monkeypatch.setattr(SETTINGS, "segment_tile_max", 128)
    x = make_inputs(B=1, T=140, HQ=2, H=1, K=160, V=136, M=24, tau=1.0)
    assert_matches(cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3)), run(parallel_reference, x, scale=0.3),
                   tol=2e-5)


@pytest.mark.parametrize("segments", [2, 50])
@pytest.mark.slow
def test_segmented_state_walk_matches_reference(segments, monkeypatch):
    """The state recurrences split into segments (SETTINGS.state_segments, as at B 1 and long T on a GPU; the reverse
    one with SETTINGS.segment_dh), with an initial state, final states and every gradient (initial-state ones too);
    packed sequences of 1, 5 and 8 chunks, so some have fewer chunks than segments or a single segment; at 50 a
    segment a chunk, the middle segments carried through."""
    monkeypatch.setattr(SETTINGS, "state_segments", segments)
    monkeypatch.setattr(SETTINGS, "segment_dh", True)  # the reverse walk too (the default; set so the test says so)
    lengths = [3, 64 * 4 + 9, 64 * 7 + 1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    x = make_inputs(B=1, T=sum(lengths), HQ=2, H=1, K=24, V=20, M=9, N=len(lengths), tau=2.0)
    got = cpu(run(chunk_op, on(cast(x, torch.float32)), cu_seqlens=cu.to(DEVICE, torch.int32)))
    assert_matches(got, run(recurrent_reference, x, cu_seqlens=cu), tol=2e-5)
    dense = make_inputs(B=2, T=64 * 6 + 5, HQ=2, H=2, K=16, V=16, M=8, tau=1.0)
    assert_matches(cpu(run(chunk_op, on(cast(dense, torch.float32)))), run(parallel_reference, dense), tol=2e-5)


def test_state_segments_only_when_full_tiles_leave_sms_idle(monkeypatch):
    import gsa.ops.triton.chunk_h as chunk_h

    monkeypatch.setattr(chunk_h, "sm_count", lambda device: 132)  # an H100
    monkeypatch.setattr(SETTINGS, "segment_tile_max", 64)
    long1 = (1, 256)  # one sequence of 256 chunks (T 16K), 1.3B heads: 8 tiles x 4 heads = 32 programs
    assert chunk_h.state_segments(512, 4, 1, *long1, "cpu") == 9
    assert chunk_h.state_segments(512, 4, 1, 8, 32, "cpu") == 1  # 256 programs
    assert chunk_h.state_segments(512, 4, 1, 1, 4, "cpu") == 1  # 4 chunks: too short
    # segments walked in 128-wide tiles: the split decided at 64-wide tiles, the segments counted for 16 programs
    monkeypatch.setattr(SETTINGS, "segment_tile_max", 128)
    assert chunk_h.state_segments(512, 4, 1, *long1, "cpu") == 17
    assert chunk_h.state_segments(512, 4, 1, 8, 32, "cpu") == 1
    monkeypatch.setattr(chunk_h, "sm_count", lambda device: 0)  # a CPU
    assert chunk_h.state_segments(512, 4, 1, *long1, "cpu") == 1


def test_state_tile_narrows_only_when_programs_are_fewer_than_sms(monkeypatch):
    import gsa.ops.triton.launch as launch

    monkeypatch.setattr(launch, "_sm_count", lambda device: 132)
    assert launch.state_tile(512, 8 * 4, "cuda") == 64  # B = 8, H = 4: 256 programs
    assert launch.state_tile(512, 1 * 4, "cuda") == 16  # B = 1: 32 programs at 64 wide, 128 at 16
    assert launch.state_tile(128, 16 * 8, "cuda") == 64
    assert launch.state_tile(20, 1, "cuda") == 16  # never below tl.dot's 16


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("chunk_states, state_dots", [("float32", "float32"), ("input", "float32"),
                                                      ("forward", "float32"), ("float32", "input"),
                                                      ("forward", "input"), ("input", "input"),
                                                      ("forward", "split"), ("auto", "split")])
def test_low_precision_within_2x_of_plain_pytorch(dtype, chunk_states, state_dots, monkeypatch):
    """Also with the chunk-start states stored in the inputs' dtype (SETTINGS.chunk_states = "input", as fla-core
    does) and the state kernels' products on 16-bit operands (SETTINGS.state_dots = "input")."""
    monkeypatch.setattr(SETTINGS, "chunk_states", chunk_states)
    monkeypatch.setattr(SETTINGS, "state_dots", state_dots)
    x = make_inputs(B=1, T=65, HQ=2, H=1, K=32, V=16, M=16, tau=4.0)
    truth = run(recurrent_reference, x)
    baseline = run(recurrent_reference, cast(x, dtype))
    assert_ratio(cpu(run(chunk_op, on(cast(x, dtype)))), baseline, truth, ratio=2.0, floor=1e-5)


@pytest.mark.parametrize("cross", [pytest.param(True, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError,
    reason="the kernels' decays exp(Gl_t - Gl_j) difference chunk-local cumulative gate sums, which cancel; the "
           "torch backend sums each segment's own gates: at this shape hk 7.1e-7 and dg 1.2e-6 vs its 7.2e-8 and "
           "2.2e-7 (the float32 token loop: 7.9e-8, 1.7e-7)")),
    pytest.param(False, marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="the whole-sequence sum of dG: its rounding grows with T (what the boundary term fixes)"))])
@pytest.mark.slow
def test_dg_stays_accurate_over_long_sequences(cross, monkeypatch):
    """dg at T = 1536 in float32 within 2x of plain PyTorch's error. dg_t sums per-token terms over all later
    steps that nearly cancel; summed over the whole sequence their rounding survives (7.6x the torch backend's
    error at T = 2048, ~20x in bf16 on an H100). The kernels take the sum over later chunks exactly at each chunk
    boundary (gsa/ops/triton/cumsum.py); `cross=False` drops those boundary terms to show this test can fail."""
    import gsa.ops.triton.chunk as chunk

    if not cross:  # the plain running sum: the same backward with the boundary terms dropped
        real = chunk.reverse_cumsum_dg
        monkeypatch.setattr(chunk, "reverse_cumsum_dg", lambda dG, dgt, cross, *a: real(dG, dgt, None, *a))
    x = make_inputs(B=1, T=1536, HQ=1, H=1, K=64, V=64, M=32, tau=4.0)
    truth = run(recurrent_reference, x)
    baseline = run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), cast(x, torch.float32))
    assert_ratio(cpu(run(chunk_op, on(cast(x, torch.float32)))), baseline, truth, ratio=2.0, floor=0)


@pytest.mark.slow
def test_dg_boundary_term_beats_the_whole_sequence_sum(monkeypatch):
    """The guard of the boundary term while the kernels' own decays limit the comparison above: at T = 1536 in
    float32, dg with the exact chunk-boundary term is at least 3x closer to float64 than the whole-sequence sum
    of dG (whose rounding grows with T)."""
    import gsa.ops.triton.chunk as chunk

    x = make_inputs(B=1, T=1536, HQ=1, H=1, K=64, V=64, M=32, tau=4.0)
    truth = run(recurrent_reference, x)[2]["g"]
    xf = on(cast(x, torch.float32))
    with_cross = rel_err(cpu(run(chunk_op, xf))[2]["g"], truth)
    real = chunk.reverse_cumsum_dg
    monkeypatch.setattr(chunk, "reverse_cumsum_dg", lambda dG, dgt, cross, *a: real(dG, dgt, None, *a))
    whole = rel_err(cpu(run(chunk_op, xf))[2]["g"], truth)
    assert 3 * with_cross <= whole, (with_cross, whole)


def without_final_states(fn):
    """fn with output_final_state=False, as a training step calls the op: no final-state cotangent reaches the
    backward (run()'s loss then takes zero final states)."""
    def call(q, k, v, s, g, *, initial_state=None, output_final_state=False, **kw):
        o, _ = fn(q, k, v, s, g, initial_state=initial_state, output_final_state=False, **kw)
        zero = o.new_zeros(())
        return o, (zero, zero)

    return call


@pytest.mark.slow
@pytest.mark.parametrize("mode, grads", [("input", "float32"), ("auto", "float32"), ("auto", "auto")])
def test_16bit_chunk_states_keep_dg_accurate_without_final_state_cotangents(mode, grads, monkeypatch):
    """SETTINGS.chunk_states = "input" (the backward's chunk states in the inputs' dtype): with no final-state
    cotangent dg takes its chunk-boundary term from the 16-bit states. At T = 2048 in fp16 that is 1.06x the
    torch backend's dg error, where the whole-sequence sum it replaces is 1.83x (2.65x at T = 4096; docs/log.md,
    "Kernels", "Found on the way"): held to 1.25x here, which the whole-sequence sum fails. Also with the state
    gradients dH in fp16 (SETTINGS.state_grads = "auto")."""
    monkeypatch.setattr(SETTINGS, "chunk_states", mode)
    monkeypatch.setattr(SETTINGS, "state_grads", grads)
    x = make_inputs(B=1, T=2048, HQ=1, H=1, K=32, V=32, M=16, tau=4.0)
    truth = run(without_final_states(recurrent_reference), x)[2]["g"]
    baseline = rel_err(run(without_final_states(recurrent_reference), cast(x, torch.float16))[2]["g"], truth)
    got = rel_err(cpu(run(without_final_states(chunk_op), on(cast(x, torch.float16))))[2]["g"], truth)
    assert got <= 1.25 * baseline, (got, baseline)


def test_packed_sequences_with_a_length_one_sequence():
    lengths = [1, 64, 37]
    cu = torch.tensor([0, 1, 65, 102])
    x = make_inputs(B=1, T=sum(lengths), HQ=4, H=2, K=16, V=20, M=9, N=len(lengths), tau=1.0)
    got = cpu(run(chunk_op, on(cast(x, torch.float32)), cu_seqlens=cu.to(DEVICE, torch.int32)))
    assert_matches(got, run(recurrent_reference, x, cu_seqlens=cu), tol=2e-5)


def test_abc_mode_through_the_front_end():
    x = make_inputs(B=2, T=40, HQ=2, H=1, K=16, V=12, M=8, abc=True)
    got = cpu(run(triton_op, on(cast(x, torch.float32))))
    assert_matches(got, run(parallel_reference, x), tol=2e-5)


def test_strong_gates_stay_finite_and_accurate():
    """Gates below -20 per step: exp(-Gl) over a chunk would overflow float32 by far."""
    x = make_inputs(B=1, T=130, HQ=1, H=1, K=16, V=16, M=16, tau=0.05)
    assert x["g"].min() < -20
    assert_matches(cpu(run(chunk_op, on(cast(x, torch.float32)))), run(recurrent_reference, x), tol=1e-4)


@pytest.mark.parametrize("span", [-1.0, float("inf")])
@pytest.mark.slow
def test_diagonal_paths_agree(span, monkeypatch):
    """The diagonal sub-blocks factored through a reference row (default under SETTINGS.factor_span) and taken
    pairwise (SETTINGS.factor_span = -1) give the same forward, states and gradients on moderate gates; inf
    (always factored) too, since no span here comes near float32's range."""
    x = on(cast(make_inputs(B=2, T=70, HQ=4, H=2, K=20, V=12, M=24, tau=2.0), torch.float32))
    default = run(chunk_op, x, scale=0.3)
    monkeypatch.setattr(SETTINGS, "factor_span", span)
    assert_matches(run(chunk_op, x, scale=0.3), default, tol=1e-5)


def test_mixed_decay_spans_match_reference():
    """Sub-blocks on both sides of SETTINGS.factor_span in one call: moderate gates, and some steps 20x stronger, whose
    sub-blocks (decay span far past 30) take the pairwise path while their neighbours are factored."""
    x = make_inputs(B=2, T=100, HQ=2, H=1, K=16, V=12, M=8, tau=1.0)
    mult = torch.ones(1, 100, 1, 1, dtype=torch.float64)
    mult[:, 20:36] = 20.0
    mult[:, 70:75] = 20.0
    x["g"] = (x["g"].detach() * mult).requires_grad_(True)
    gl = x["g"].detach()[:, 16:32].sum(1)  # one sub-block inside the strong steps: span far past 30
    assert gl.min() < -60
    got = cpu(run(chunk_op, on(cast(x, torch.float32)), scale=0.3))
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_keep_states_gives_the_same_gradients():
    x = on(cast(make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=16), torch.float32))
    a, b = run(chunk_op, x), run(chunk_op, x, keep_states=True)
    assert_matches(a, b, tol=1e-6)


def record_state_walks(monkeypatch, walk: str = "chunk_fwd_h") -> list:
    """The storage dtype of what every state walk the op runs writes, in order: chunk_h.chunk_fwd_h's chunk-start
    states (the forward's two, then the backward's recomputed ones), or with walk="chunk_bwd_dh" the reverse walks'
    state gradients (the value pass's, then the key pass's). The compile-only warm pass, which would walk too on a
    GPU, is off."""
    import gsa.ops.triton.chunk as chunk

    real, dtypes = getattr(chunk, walk), []

    def spy(*args, **kwargs):
        h, ht = real(*args, **kwargs)
        dtypes.append(h.dtype)
        return h, ht

    monkeypatch.setattr(chunk, walk, spy)
    monkeypatch.setattr(SETTINGS, "prewarm", False)
    return dtypes


@pytest.mark.parametrize("setting", [False, True])
def test_keep_states_none_follows_settings(setting, monkeypatch):
    """keep_states=None takes SETTINGS.keep_states: kept states leave the backward no state walk to recompute."""
    walks = record_state_walks(monkeypatch)
    monkeypatch.setattr(SETTINGS, "keep_states", setting)
    x = on(cast(make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=16), torch.float32))
    got = run(chunk_op, x, keep_states=None)
    assert len(walks) == (2 if setting else 4)  # the forward's two walks, and the backward's two recomputed
    assert_matches(got, run(chunk_op, x, keep_states=setting), tol=1e-6)


def test_inputs_not_modified():
    x = on(cast(make_inputs(B=1, T=40, HQ=2, H=1, K=16, V=16, M=16), torch.float32))
    before = {n: t.detach().clone() for n, t in x.items() if t is not None}
    run(chunk_op, x)
    for n, t in before.items():
        assert torch.equal(x[n].detach(), t), f"{n} was modified"


@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("init_state", [False, True])
@pytest.mark.parametrize("narrow", [False, True])
def test_fused_recurrent_matches_reference(T, init_state, narrow, monkeypatch):
    """narrow: K and V split into 16-wide tiles (three and three), as a GPU with few sequences runs them."""
    if narrow:
        monkeypatch.setattr(SETTINGS, "state_tile_max", 16)
    x = make_inputs(B=2, T=T, HQ=4, H=2, K=40 if narrow else 20, V=36, M=24, tau=1.0, init_state=init_state)
    d = {n: None if t is None else t.detach() for n, t in x.items()}
    init = (d["hk0"], d["hv0"]) if init_state else None
    ref_o, ref_st = recurrent_reference(d["q"], d["k"], d["v"], d["s"], d["g"], scale=0.4, initial_state=init,
                                        output_final_state=True)
    f = {n: None if t is None else t.float().to(DEVICE) for n, t in d.items()}
    finit = (f["hk0"], f["hv0"]) if init_state else None
    o, st = fused_recurrent_gsa(f["q"], f["k"], f["v"], f["s"], f["g"], 0.4, finit, True)
    for got, ref in ((o, ref_o), (st[0], ref_st[0]), (st[1], ref_st[1])):
        assert rel_err(got.cpu(), ref) < 2e-6


def test_fused_recurrent_packed_with_a_length_one_sequence():
    cu = torch.tensor([0, 1, 4, 9])
    x = make_inputs(B=1, T=9, HQ=2, H=1, K=16, V=16, M=5, N=3, tau=1.0)
    d = {n: t.detach() for n, t in x.items()}
    ref_o, ref_st = recurrent_reference(d["q"], d["k"], d["v"], d["s"], d["g"], initial_state=(d["hk0"], d["hv0"]),
                                        output_final_state=True, cu_seqlens=cu)
    f = {n: t.float().to(DEVICE) for n, t in d.items()}
    o, st = fused_recurrent_gsa(f["q"], f["k"], f["v"], f["s"], f["g"], 16**-0.5, (f["hk0"], f["hv0"]), True,
                                cu.to(DEVICE, torch.int32))
    for got, ref in ((o, ref_o), (st[0], ref_st[0]), (st[1], ref_st[1])):
        assert rel_err(got.cpu(), ref) < 2e-6


# In-place decode chaining on every backend, triton included: tests/ops/test_inplace_state.py.


def test_front_end_sends_short_inference_to_the_recurrent_kernels(monkeypatch):
    import gsa.ops.triton as tri

    calls = []
    monkeypatch.setattr(tri, "fused_recurrent_gsa", lambda *a, **k: calls.append(1) or fused_recurrent_gsa(*a, **k))
    x = cast(make_inputs(B=1, T=3, HQ=2, H=1, K=16, V=16, M=8), torch.float32)
    f = {n: t.detach().to(DEVICE) for n, t in x.items()}
    with torch.no_grad():
        triton_op(f["q"], f["k"], f["v"], f["s"], f["g"])
    assert calls == [1]


def test_expanded_final_state_cotangents():
    """loss = hk.sum() hands backward an expanded (stride-0) cotangent; o unused hands it zeros."""
    x = cast(make_inputs(B=1, T=30, HQ=2, H=1, K=16, V=16, M=8), torch.float32)
    grads = []
    for fn in (chunk_op, parallel_reference):
        y = on(x) if fn is chunk_op else {n: t.detach().double().requires_grad_(True) for n, t in x.items()}
        _, (hk, hv) = fn(y["q"], y["k"], y["v"], y["s"], y["g"], initial_state=(y["hk0"], y["hv0"]),
                         output_final_state=True)
        (hk.sum() + hv.sum()).backward()
        grads.append({n: torch.zeros_like(t).cpu() if t.grad is None else t.grad.cpu() for n, t in y.items()})
    for n in grads[1]:
        assert rel_err(grads[0][n], grads[1][n]) < 2e-5, n


@pytest.mark.parametrize("final_state", [False, True])
def test_backward_receives_no_zero_filled_cotangents(final_state):
    """Unused outputs (A, gl, P, the kept states; the final states when only o is used) reach the backward as None,
    not as zero tensors autograd fills (3 float32 [B, T, H, M] fills a step); the gradients stay exact."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    x = cast(make_inputs(B=1, T=30, HQ=2, H=1, K=16, V=16, M=8), torch.float32)
    y = on(x)
    o, _ = chunk_op(y["q"], y["k"], y["v"], y["s"], y["g"], initial_state=(y["hk0"], y["hv0"]),
                    output_final_state=final_state)
    with Ops() as ops:
        o.sum().backward()
    assert not [n for n in ops.names if "zero" in n or "fill" in n], ops.names
    z = {n: t.detach().double().requires_grad_(True) for n, t in x.items()}
    parallel_reference(z["q"], z["k"], z["v"], z["s"], z["g"], initial_state=(z["hk0"], z["hv0"]))[0].sum().backward()
    for n in z:
        assert rel_err(y[n].grad.cpu(), z[n].grad) < 2e-5, n


def test_opcheck_chunk_op():
    """Fake implementation, autograd registration and schema of the custom op (torch.library.opcheck)."""
    x = cast(make_inputs(B=1, T=20, HQ=2, H=1, K=16, V=16, M=16), torch.float32)
    f = on(x)
    torch.library.opcheck(torch.ops.gsa.chunk_fwd.default,
                          (f["q"], f["k"], f["v"], f["s"], f["g"], 0.2, f["hk0"], f["hv0"], True, False, None))


def test_compile_fullgraph_traces_the_ops():
    """torch.compile(fullgraph=True) through the custom ops (aot_eager: no codegen, so it runs on the CPU too)."""
    x = on(cast(make_inputs(B=1, T=20, HQ=2, H=1, K=16, V=16, M=16), torch.float32))

    def f(q, k, v, s, g, initial_state=None, output_final_state=False):
        o, st = triton_op(torch.nn.functional.silu(q), k, v, s, g, initial_state=initial_state,
                          output_final_state=output_final_state)
        return o * 2, st

    assert_matches(run(torch.compile(f, fullgraph=True, backend="aot_eager"), x), run(f, x), tol=1e-6)

    d = {n: t.detach() for n, t in x.items()}
    hk, hv = d["hk0"].clone(), d["hv0"].clone()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(q, k, v, s, g, hk, hv):
        return fused_recurrent_gsa(q, k, v, s, g, 0.25, (hk, hv), True, inplace=True)[0]

    sl = slice(0, 1)
    o = step(d["q"][:, sl], d["k"][:, sl], d["v"][:, sl], d["s"][:, sl], d["g"][:, sl], hk, hv)
    ref_o, ref_st = fused_recurrent_gsa(d["q"][:, sl], d["k"][:, sl], d["v"][:, sl], d["s"][:, sl], d["g"][:, sl],
                                        0.25, (d["hk0"], d["hv0"]), True)
    torch.testing.assert_close(o, ref_o)
    torch.testing.assert_close(hk, ref_st[0])
    torch.testing.assert_close(hv, ref_st[1])


@pytest.mark.parametrize("keep_states", [False, True])
def test_eager_calls_skip_the_dispatcher_and_match_the_registered_op_bitwise(keep_states, monkeypatch):
    """Eager calls run _EagerChunk (the op's own forward, context and backward without the custom op's dispatch);
    torch.compile traces torch.ops.gsa.chunk_fwd. Same kernels, same inputs: bitwise the same outputs, final states
    and gradients (initial states and final-state cotangents included)."""
    import gsa.ops.triton.chunk as chunk

    x = on(cast(make_inputs(B=2, T=70, HQ=2, H=1, K=16, V=24, M=16), torch.float32))

    def registered(q, k, v, s, g, initial_state=None, output_final_state=False):
        hk0, hv0 = initial_state
        o, _, _, _, _, hkT, hvT, _, _ = torch.ops.gsa.chunk_fwd(q, k, v, s, g, 0.25, hk0, hv0, output_final_state,
                                                               keep_states, None, False)
        return o, (hkT, hvT)

    want = run(registered, x)
    for name in ("chunk_fwd_op", "chunk_bwd_op"):  # an eager call that reached them would fail here
        monkeypatch.setattr(chunk, name, None)
    got = run(lambda *a, **kw: chunk_op(*a, scale=0.25, keep_states=keep_states, **kw), x)
    assert torch.equal(got[0], want[0]) and all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
    assert got[2].keys() == want[2].keys() and all(torch.equal(got[2][n], want[2][n]) for n in want[2])


@pytest.mark.skipif(DEVICE != "cpu", reason="counts launches through the Triton interpreter (CPU only)")
@pytest.mark.parametrize("final_state", [False, True])
def test_prewarm_queues_exactly_the_launches_of_a_call_and_runs_none(final_state, monkeypatch):
    """The first-call warm pass (chunk._prewarm: forward and backward with every launch queued for compilation)
    must compile the same kernels with the same grids and constants as the real call launches, and run none."""
    import gsa.ops.triton.chunk as chunk
    from triton.runtime.interpreter import InterpretedFunction

    calls = []
    real = InterpretedFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        consts = tuple(sorted((n, v) for n, v in kwargs.items() if not isinstance(v, torch.Tensor)))
        calls.append((self.fn.__name__, tuple(grid), consts, warmup))
        return real(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", record)
    monkeypatch.setattr(chunk, "_prewarmed", set())
    x = on(make_inputs(B=2, T=70, HQ=4, H=2, K=20, V=12, M=7, dtype=torch.float32))
    before = {n: t.detach().clone() for n, t in x.items()}
    keep = chunk.SETTINGS.keep_states  # what chunk_gsa's keep_states=None below takes
    args = (x["q"], x["k"], x["v"], x["s"], x["g"], 0.3, x["hk0"], x["hv0"], final_state, keep, None, False)
    chunk._prewarm(*args)
    warm = list(calls)
    calls.clear()
    chunk._prewarm(*args)  # once per configuration
    assert calls == []
    o, st = chunk_gsa(x["q"], x["k"], x["v"], x["s"], x["g"], 0.3, (x["hk0"], x["hv0"]), final_state, None)
    loss = o.square().sum() + (st[0].sum() + st[1].sum() if final_state else 0)
    loss.backward()
    assert len(warm) >= 12 and all(w for *_, w in warm) and not any(w for *_, w in calls)
    assert [c[:3] for c in warm] == [c[:3] for c in calls]
    assert all(torch.equal(x[n].detach(), before[n]) for n in x if x[n] is not None)


# ---------------------------------------------------------------- GPU: production shapes, bf16, torch.compile

gpu = pytest.mark.gpu


@gpu
@pytest.mark.parametrize("chunk_states", ["float32", "forward", "input", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [
    dict(B=2, T=130, HQ=4, H=4, K=128, V=128, M=64),
    dict(B=1, T=100, HQ=8, H=2, K=64, V=96, M=32),
    dict(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64),  # 32 chunks: state rounding has time to accumulate
    dict(B=2, T=130, HQ=2, H=2, K=160, V=160, M=64),  # D > 128: kernel_a's 32-row blocks, a partial D tile
])
def test_gpu_within_2x_of_the_torch_backend(dtype, shape, chunk_states, monkeypatch, request):
    if chunk_states == "input" and dtype == torch.bfloat16 and shape["T"] >= 2048:
        # A known limit of the opt-in bf16 chunk states (gsa/ops/triton/cumsum.py): dg keeps the whole-sequence
        # sum there, 3.1x the torch backend's error at this shape on the H100 (docs/log.md); strict, so a fix shows.
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                              reason="bf16 chunk states: dg's whole-sequence sum at T = 2048"))

    monkeypatch.setattr(SETTINGS, "chunk_states", chunk_states)
    x = on(make_inputs(**shape, tau=4.0), "cuda")
    truth = run(recurrent_reference, x)
    baseline = run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), on(cast(x, dtype), "cuda"))
    assert_ratio(run(chunk_op, on(cast(x, dtype), "cuda")), baseline, truth, ratio=2.0, floor=1e-5)


@gpu
@pytest.mark.parametrize("grads", ["float32", "auto"])
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_16bit_chunk_states_without_final_state_cotangents_within_2x(dtype, keep, grads, monkeypatch):
    """chunk_states = "input" where no final-state cotangent arrives (a training step): dg's boundary term from the
    16-bit states (recomputed, or kept from the forward), at the T = 2048 shape where the whole-sequence sum fails in
    bf16 (the xfail above); also with the state gradients dH stored 16-bit (SETTINGS.state_grads = "auto")."""
    monkeypatch.setattr(SETTINGS, "chunk_states", "input")
    monkeypatch.setattr(SETTINGS, "state_grads", grads)
    x = on(make_inputs(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64, tau=4.0), "cuda")
    truth = run(without_final_states(recurrent_reference), x)
    torch_backend = without_final_states(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k))
    baseline = run(torch_backend, on(cast(x, dtype), "cuda"))
    got = run(without_final_states(functools.partial(chunk_op, keep_states=keep)), on(cast(x, dtype), "cuda"))
    for name in "qkvsg":  # the outputs and final states are zeros here; compare the gradients
        err, base = rel_err(got[2][name], truth[2][name]), rel_err(baseline[2][name], truth[2][name])
        assert err <= 2.0 * base + 1e-5, (name, err, base)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [dict(B=2, T=130, HQ=4, H=4, K=128, V=128, M=64),
                                   dict(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64)])
def test_gpu_split_state_dots_within_2x_of_the_torch_backend(dtype, shape, monkeypatch):
    """SETTINGS.state_dots = "split": the state kernels' float32 weights as two 16-bit parts, two 16-bit dots (at
    the shape where the single 16-bit rounding fails, below, and at T = 2048)."""
    monkeypatch.setattr(SETTINGS, "state_dots", "split")
    x = on(make_inputs(**shape, tau=4.0), "cuda")
    truth = run(recurrent_reference, x)
    baseline = run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), on(cast(x, dtype), "cuda"))
    assert_ratio(run(chunk_op, on(cast(x, dtype), "cuda")), baseline, truth, ratio=2.0, floor=1e-5)


@gpu
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="16-bit state-kernel operands: the decayed slot weights rounded to 16 bits in the states but "
                          "not in the per-token dG terms, whose cancellation dg relies on; on the H100 dg was 2.1-3.3x "
                          "the torch backend's error at these shapes (SETTINGS.state_dots stays opt-in)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_16bit_state_dots_within_2x_of_the_torch_backend(dtype, monkeypatch):
    """SETTINGS.state_dots = "input" (kernel_h's and kernel_dh's products on 16-bit operands, as fla-core's):
    strict, so a fix shows."""
    monkeypatch.setattr(SETTINGS, "state_dots", "input")
    x = on(make_inputs(B=2, T=130, HQ=4, H=4, K=128, V=128, M=64, tau=4.0), "cuda")
    truth = run(recurrent_reference, x)
    baseline = run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), on(cast(x, dtype), "cuda"))
    assert_ratio(run(chunk_op, on(cast(x, dtype), "cuda")), baseline, truth, ratio=2.0, floor=1e-5)


@gpu
def test_gpu_compile_fullgraph_matches_eager():
    x = on(cast(make_inputs(B=2, T=130, HQ=4, H=2, K=64, V=64, M=32), torch.bfloat16), "cuda")

    def f(q, k, v, s, g, initial_state=None, output_final_state=False):
        o, st = triton_op(torch.nn.functional.silu(q), k, v, s, g, initial_state=initial_state,
                          output_final_state=output_final_state)
        return o * 2, st

    eager = run(f, x)
    compiled = run(torch.compile(f, fullgraph=True), x)
    assert_matches(compiled, eager, tol=1e-6)


@gpu
def test_gpu_compiled_decode_step_in_place():
    x = cast(make_inputs(B=4, T=1, HQ=4, H=2, K=64, V=64, M=32), torch.bfloat16)
    f = {n: t.detach().cuda() for n, t in x.items()}
    hk, hv = f["hk0"].clone(), f["hv0"].clone()

    @torch.compile(fullgraph=True)
    def step(q, k, v, s, g, hk, hv):
        return fused_recurrent_gsa(q, k, v, s, g, 0.125, (hk, hv), True, inplace=True)[0]

    o = step(f["q"], f["k"], f["v"], f["s"], f["g"], hk, hv)
    ref_o, ref_st = fused_recurrent_gsa(f["q"], f["k"], f["v"], f["s"], f["g"], 0.125, (f["hk0"], f["hv0"]), True)
    torch.testing.assert_close(o, ref_o)
    torch.testing.assert_close(hk, ref_st[0])
    torch.testing.assert_close(hv, ref_st[1])


@gpu
def test_gpu_opcheck():
    x = cast(make_inputs(B=1, T=70, HQ=2, H=1, K=32, V=32, M=16), torch.float32)
    f = {n: t.detach().cuda().requires_grad_(True) for n, t in x.items()}
    torch.library.opcheck(torch.ops.gsa.chunk_fwd.default,
                          (f["q"], f["k"], f["v"], f["s"], f["g"], 0.2, f["hk0"], f["hv0"], True, False, None))


@pytest.mark.parametrize("B,T", [(3, 1), (1, 4), (2, 3)])
def test_fused_recurrent_reads_token_strided_views(B, T):
    """q, k, v as column slices of one fused projection output (tokens W apart) are read in place, not copied,
    and give what contiguous copies give."""
    from gsa.ops.triton.fused_recurrent import token_rows

    HQ, H, K, V, M = 4, 2, 16, 12, 8
    torch.manual_seed(0)
    y = torch.randn(B, T, HQ * K + H * K + H * V + 5, device=DEVICE)
    q, k, v, _ = y.split([HQ * K, H * K, H * V, 5], dim=-1)
    q, k, v = q.view(B, T, HQ, K), k.view(B, T, H, K), v.view(B, T, H, V)
    assert all(token_rows(x) is x for x in (q, k, v))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, M, device=DEVICE)) / 4
    s = -torch.expm1(g)
    h0 = (torch.randn(B, H, K, M, device=DEVICE), torch.randn(B, H, M, V, device=DEVICE))
    o, st = fused_recurrent_gsa(q, k, v, s, g, 0.3, h0, True)
    o_ref, st_ref = fused_recurrent_gsa(q.contiguous(), k.contiguous(), v.contiguous(), s, g, 0.3, h0, True)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=0)
    torch.testing.assert_close(st[1], st_ref[1], rtol=0, atol=0)
    odd = q.transpose(2, 3).contiguous().transpose(2, 3)  # heads x D not dense: copied
    assert token_rows(odd) is not odd and token_rows(odd).is_contiguous()


def test_chunk_states_in_the_input_dtype(monkeypatch):
    """SETTINGS.chunk_states = "input": the kept chunk-start states are stored as the inputs (half the bytes), the
    returned final states stay float32, and with float32 inputs nothing changes."""
    from gsa.ops.triton.chunk import chunk_fwd_op
    from gsa.ops.triton.launch import chunk_state_dtype

    x = make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=8, tau=1.0)
    monkeypatch.setattr(SETTINGS, "chunk_states", "input")
    for dtype in (torch.float16, torch.float32):
        d = {n: t.detach().to(DEVICE) for n, t in cast(x, dtype).items()}
        out = chunk_fwd_op(d["q"], d["k"], d["v"], d["s"], d["g"], 0.25, d["hk0"], d["hv0"], True, True, None)
        hkT, hk = out[5], out[7]
        assert hk.dtype == dtype and hkT.dtype == torch.float32
    with pytest.raises(ValueError, match="chunk_states must be"):
        monkeypatch.setattr(SETTINGS, "chunk_states", "bf16")
        chunk_state_dtype(torch.float16, True)


@pytest.mark.parametrize("keep_states", [False, True])
@pytest.mark.parametrize("final", [False, True])
def test_auto_chunk_states_are_float32_only_where_final_states_reach_the_backward(keep_states, final, monkeypatch):
    """SETTINGS.chunk_states = "auto": the backward's chunk states are stored as the inputs, unless final-state
    cotangents reach it (recomputed states) or the call returns final states (kept ones): then float32, as dg's
    boundary term needs them there (cumsum.py)."""
    dtypes = record_state_walks(monkeypatch)
    monkeypatch.setattr(SETTINGS, "chunk_states", "auto")
    x = on(cast(make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=8, tau=1.0), torch.float16))
    op = chunk_op if final else without_final_states(chunk_op)
    run(op, x, keep_states=keep_states)
    backward_reads = dtypes[:2] if keep_states else dtypes[2:]  # kept from the forward, or recomputed
    forward_only = [] if keep_states else dtypes[:2]
    assert len(dtypes) == (2 if keep_states else 4)
    assert backward_reads == [torch.float32 if final else torch.float16] * 2
    assert forward_only in ([], [torch.float16] * 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("mode", ["float32", "auto"])
@pytest.mark.parametrize("final", [False, True])
def test_16bit_state_gradients_only_without_final_state_cotangents(dtype, mode, final, monkeypatch):
    """SETTINGS.state_grads = "auto": the reverse walks store dH in the inputs' 16-bit dtype unless final-state
    cotangents reach the backward; "float32" (and float32 inputs) always float32."""
    grads = record_state_walks(monkeypatch, "chunk_bwd_dh")
    monkeypatch.setattr(SETTINGS, "state_grads", mode)
    x = on(cast(make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=8, tau=1.0), dtype))
    run(chunk_op if final else without_final_states(chunk_op), x)
    low = mode == "auto" and dtype == torch.float16 and not final
    assert grads == [torch.float16 if low else torch.float32] * 2


@pytest.mark.parametrize("chunk_states", ["forward", "auto"])
@pytest.mark.parametrize("keep", [False, True])
def test_16bit_state_gradients_within_2x_of_plain_pytorch(chunk_states, keep, monkeypatch):
    """dH stored in fp16 (SETTINGS.state_grads = "auto", no final-state cotangent): every gradient within 2x of the
    token loop's error in fp16, beside 16-bit chunk states ("auto") or float32 ones ("forward"), kept or
    recomputed; the walks split into segments (their carries read and write the 16-bit dH)."""
    monkeypatch.setattr(SETTINGS, "state_grads", "auto")
    monkeypatch.setattr(SETTINGS, "chunk_states", chunk_states)
    monkeypatch.setattr(SETTINGS, "state_segments", 2)
    x = make_inputs(B=1, T=200, HQ=2, H=1, K=32, V=16, M=16, tau=4.0)
    truth = run(without_final_states(recurrent_reference), x)
    baseline = run(without_final_states(recurrent_reference), cast(x, torch.float16))
    got = cpu(run(without_final_states(functools.partial(chunk_op, keep_states=keep)), on(cast(x, torch.float16))))
    for name in "qkvsg":  # the outputs and final states are zeros here; compare the gradients
        err, base = rel_err(got[2][name], truth[2][name]), rel_err(baseline[2][name], truth[2][name])
        assert err <= 2.0 * base + 1e-5, (name, err, base)


@pytest.mark.parametrize("keep_states", [False, True])
def test_forward_only_chunk_states(keep_states, monkeypatch):
    """SETTINGS.chunk_states = "forward": states only the forward's own kernels read are stored as the inputs; the
    ones the backward reads (recomputed, or kept from the forward) stay float32, so dg keeps its exact boundary
    term. Without kept states the forward's output equals "input"'s; with them everything equals "float32"'s."""
    made = record_state_walks(monkeypatch)
    x = on(cast(make_inputs(B=1, T=70, HQ=2, H=1, K=16, V=16, M=8, tau=1.0), torch.float16))
    out, states = {}, {}
    for mode in ("forward", "input", "float32"):
        monkeypatch.setattr(SETTINGS, "chunk_states", mode)
        made.clear()
        out[mode] = run(lambda *a, **k: chunk_op(*a, keep_states=keep_states, **k), x)
        states[mode] = list(made)
    f16, f32 = torch.float16, torch.float32
    # the forward's hk and hv, then (unless kept) the backward's recomputed hv and hk
    assert states["forward"] == ([f32, f32] if keep_states else [f16, f16, f32, f32])
    assert states["input"] == ([f16, f16] if keep_states else [f16, f16, f16, f16])
    if keep_states:
        assert_matches(out["forward"], out["float32"], tol=0)
    else:
        torch.testing.assert_close(out["forward"][0], out["input"][0], rtol=0, atol=0)
        assert not torch.equal(out["forward"][0], out["float32"][0])  # the 16-bit states did change the forward
