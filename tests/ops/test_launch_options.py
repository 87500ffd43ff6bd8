"""Launch options of the Triton kernels: the per-kernel table in SETTINGS.launch, its "@gqa" entries for grouped
heads and "@m128" entries above 64 slots, and kernel names checked where the table is changed (a misspelt name would
otherwise change nothing); the state kernels' product operands (SETTINGS.state_dots)."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

from gsa.bench.grid import launch_variants  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from gsa.ops.triton.launch import WIDE_SLOTS, launch_options  # noqa: E402
from op_inputs import cast, make_inputs, on, run  # noqa: E402


def test_wide_slot_entries_apply_above_64_slots_only():
    table = {"a-small": {"num_warps": 2, "num_stages": 2}, "a-small@m128": {"num_warps": 8}}
    with SETTINGS.override(chunk_warps=4, launch=table):
        assert launch_options("a-small", slots=WIDE_SLOTS) == {"num_warps": 2, "num_stages": 2}
        assert launch_options("a-small", slots=WIDE_SLOTS + 1) == {"num_warps": 8, "num_stages": 2}
        assert launch_options("a-small") == {"num_warps": 2, "num_stages": 2}  # no slot count: the base entry
        # defaults (a tile) under the table's entries, the chunk warps under everything
        assert launch_options("ds", slots=128, BM=64) == {"num_warps": 4, "BM": 64}


def test_grouped_head_entries_apply_to_grouped_heads_only_and_before_wide_slots():
    table = {"a-small": {"num_warps": 2, "num_stages": 2}, "a-small@gqa": {"num_warps": 4, "GROUP": True},
             "a-small@m128": {"num_warps": 8}}
    with SETTINGS.override(chunk_warps=4, launch=table):
        assert launch_options("a-small", slots=64) == {"num_warps": 2, "num_stages": 2}
        assert launch_options("a-small", slots=64, grouped=True) == {"num_warps": 4, "num_stages": 2, "GROUP": True}
        assert launch_options("a-small", slots=128, grouped=True) == {"num_warps": 8, "num_stages": 2, "GROUP": True}


def test_kernel_a_groups_by_default_only_where_a_kv_head_has_several_query_heads():
    """The default table's "@gqa" entries (one program per kv head at D <= 128) reach kernel_a's launch only at
    HQ > H; its grid then has one program per kv head. At D <= 128 and M <= 64 a program takes a whole chunk
    (WHOLE); at D > 128 a 32-row block of a chunk (WHOLE, RB 32); above 64 slots the sub-block programs."""
    from gsa.ops.triton import chunk_a
    from gsa.ops.triton.chunk_a import kernel_a_launch

    kernel, grid, opts = kernel_a_launch("a-small", H=2, HQ=8, M=64, NT=3)
    assert kernel is chunk_a.chunk_gsa_fwd_kernel_a_whole and opts["GROUP"], opts
    assert grid == (2 * 3,)  # kv heads x chunks
    kernel, grid, opts = kernel_a_launch("a-small", H=8, HQ=8, M=64, NT=3)
    assert kernel is chunk_a.chunk_gsa_fwd_kernel_a_whole and not opts["GROUP"], opts
    assert grid == (8 * 3,)  # query heads x chunks
    kernel, grid, opts = kernel_a_launch("dp-small", H=2, HQ=8, M=128, NT=3)
    assert kernel is chunk_a.chunk_gsa_fwd_kernel_a and opts["GROUP"] and opts["num_warps"] == 8, opts
    assert grid == (4 * 2 * 3,)  # sub-blocks x kv heads x chunks
    kernel, grid, opts = kernel_a_launch("a", H=4, HQ=4, M=64, NT=3)
    assert kernel is chunk_a.chunk_gsa_fwd_kernel_a_whole and not opts["GROUP"] and opts["RB"] == 32, opts
    assert grid == (2 * 4 * 3,)  # row blocks x query heads x chunks
    kernel, grid, opts = kernel_a_launch("dp", H=4, HQ=4, M=128, NT=3)
    assert kernel is chunk_a.chunk_gsa_fwd_kernel_a and opts["num_warps"] == 8, opts
    assert grid == (4 * 4 * 3,)  # sub-blocks x query heads x chunks


def test_launch_key_follows_every_new_launch_table_and_field():
    """launch.launch_key (the first-call warm pass's key) is memoized per SETTINGS.launch dict: another dict with other
    options, or another chunk_warps / chunk_states / state_dots / mixed_dots, gives another key; restoring them the
    first again."""
    from gsa.ops.triton.launch import launch_key

    first = launch_key()
    assert launch_key() is first
    with SETTINGS.override(launch={**SETTINGS.launch, "o": {"ND": 0, "RB": 0}}):
        other = launch_key()
        assert other != first and ("o", (("ND", 0), ("RB", 0))) in other[-1]
    with SETTINGS.override(launch=dict(SETTINGS.launch)):  # a new dict with the same options: the same key
        assert launch_key() == first
    fields = (("chunk_warps", 8), ("chunk_states", "float32"), ("state_dots", "input"), ("mixed_dots", ["o"]))
    for field, value in fields:
        with SETTINGS.override(**{field: value}):
            assert launch_key() != first
    assert launch_key() == first


def test_unknown_kernel_names_are_refused():
    with pytest.raises(ValueError, match=r"kernel names .* got \['ds@m256', 'kernel_ds'\]"):
        with SETTINGS.override(launch={"kernel_ds": {"num_warps": 8}, "ds@m256": {}}):
            pass
    with pytest.raises(SystemExit, match=r"unknown kernel\(s\) \['dss'\]"):
        launch_variants(['{"dss": {"num_warps": 8}}'])
    assert launch_variants(['{"ds@m128": {"BM": 128}}']) == [{"launch": {"ds@m128": {"BM": 128}}}]


@pytest.mark.parametrize("name", ["ds", "h", "dh"])
def test_slot_tile_must_be_a_power_of_two(name):
    x = on(cast(make_inputs(B=1, T=20, HQ=2, H=1, K=16, V=16, M=40), torch.float32))
    with SETTINGS.override(launch={**SETTINGS.launch, name: {"BM": 24}}):
        with pytest.raises(ValueError, match=rf"SETTINGS.launch\['{name}'\]\['BM'\] .* power of two >= 16, got 24"):
            run(lambda q, k, v, s, g, initial_state=None, output_final_state=False:
                chunk_gsa(q, k, v, s, g, 0.3, initial_state, output_final_state, None, False, False), x)


def test_state_dots_modes_and_float32_inputs_alone():
    from gsa.ops.triton.launch import state_dots_mode

    assert state_dots_mode(torch.bfloat16) == 2  # the default: the float32 weights split into two 16-bit parts
    for mode, code in (("float32", 0), ("input", 1), ("split", 2)):
        with SETTINGS.override(state_dots=mode):
            assert state_dots_mode(torch.bfloat16) == state_dots_mode(torch.float16) == code
            assert state_dots_mode(torch.float32) == 0
    with SETTINGS.override(state_dots="bf16"):
        with pytest.raises(ValueError, match="SETTINGS.state_dots must be 'float32', 'input' or 'split', got 'bf16'"):
            state_dots_mode(torch.bfloat16)


def test_state_grad_dtypes_and_a_misspelt_mode():
    from gsa.ops.triton.launch import state_grad_dtype

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        with SETTINGS.override(state_grads="float32"):
            assert state_grad_dtype(dtype, False) == state_grad_dtype(dtype, True) == torch.float32
        with SETTINGS.override(state_grads="auto"):
            assert state_grad_dtype(dtype, False) == dtype  # float32 inputs stay float32 here too
            assert state_grad_dtype(dtype, True) == torch.float32
    with SETTINGS.override(state_grads="input"):
        with pytest.raises(ValueError, match="SETTINGS.state_grads must be 'float32' or 'auto', got 'input'"):
            state_grad_dtype(torch.bfloat16, False)


def test_launch_table_is_read_only_and_every_assignment_is_a_new_version():
    """The launchers memoize what they derive from SETTINGS per version (launch.settings_memo): an in-place edit of
    the launch table, which no version would record, is refused; assigning a field (a new table too) is seen."""
    with pytest.raises(TypeError):
        SETTINGS.launch["dx"] = {"num_warps": 2}
    with pytest.raises(TypeError):
        SETTINGS.launch["dx"]["num_warps"] = 2
    before = SETTINGS.version
    assert launch_options("dx")["num_warps"] == 8
    with SETTINGS.override(launch={**SETTINGS.launch, "dx": {"num_warps": 2}}):
        assert SETTINGS.version > before
        assert launch_options("dx")["num_warps"] == 2
    assert launch_options("dx")["num_warps"] == 8
    opts = launch_options("dx")
    opts["num_warps"] = 1  # a caller's copy: the memo keeps its own
    assert launch_options("dx")["num_warps"] == 8


def test_memoized_walk_plans_follow_the_settings():
    """chunk_h.walk_plan's layout is memoized per settings version: a changed field reaches the next plan."""
    from gsa.ops.triton.chunk_h import walk_plan
    from gsa.ops.triton.chunks import prepare_chunks

    x, chunks = torch.empty(1, 4, 64), prepare_chunks(None, 1, 64 * 40, "cpu")
    assert walk_plan(x, "h", 64, 4, 64, chunks, True).NS == 1  # on a CPU: never split
    with SETTINGS.override(state_segments=4):
        plan = walk_plan(x, "h", 64, 4, 64, chunks, True)
        assert plan.NS == 4 and plan.seg_h.shape == (4, 4, 64, 64)
    assert walk_plan(x, "h", 64, 4, 64, chunks, True).NS == 1
