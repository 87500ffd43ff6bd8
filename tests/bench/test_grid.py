"""gsa bench grid on a CPU: the grid covers the axes it promises, and a finished run's JSON renders to a table and a
plot (the timing itself needs a GPU and runs through benchmarks/recipes/kernels.sh)."""

import json

import pytest

from gsa.bench import cost, grid, grid_report


def test_grid_covers_every_axis():
    shapes = grid.GRID.values()
    assert {x.K for x in shapes} >= {64, 128, 256, 512}
    assert {x.M for x in shapes} >= {32, 64, 128}
    assert {x.T for x in shapes} >= {2048, 4096, 16384, 65536}
    assert min(x.B for x in shapes) == 1 and max(x.B for x in shapes) == 16
    assert min(x.HQ for x in shapes) == 1 and max(x.HQ for x in shapes) == 32
    assert any(x.HQ != x.H for x in shapes)
    assert {x.dtype for x in shapes} == {"bf16", "fp16"}


def test_unknown_shape_is_refused_by_name():
    with pytest.raises(SystemExit, match="nope"):
        grid.select("1.3b,nope")
    assert list(grid.select("hd64,1.3b")) == ["hd64", "1.3b"]


def test_list_first_names_one_shape_per_autotune_class(capsys):
    assert grid.main(["--list-first", "--shapes", "1.3b,1.3b-t4k,hd128,1.3b-fp16,hd128-t16k,1.3b-m32"]) == 0
    # 1.3b-t4k and hd128-t16k differ from 1.3b and hd128 in batch and length only; fp16 and M are classes of their own
    assert capsys.readouterr().out.split() == ["1.3b", "hd128", "1.3b-fp16", "1.3b-m32"]
    assert grid.main(["--list-first"]) == 0
    firsts = capsys.readouterr().out.split()
    assert len(firsts) == len({x.tune_class() for x in grid.GRID.values()}) == 14


def _row(name, ours, fla=None, sdpa=None, device=None):
    t = lambda ms: dict(first_call_s=1.0, fwd_ms=ms / 4, fwd_bwd_ms=ms, extra_mib=100.0)  # noqa: E731
    row = dict(name=name, **vars(grid.GRID[name]), gsa=t(ours))
    if fla is not None:
        row["fla"] = t(fla)
    if device is not None:  # (ours, fla) busy GPU ms
        row["gsa"]["device_fwd_bwd_ms"], row["fla"]["device_fwd_bwd_ms"] = device
    if sdpa is not None:
        row["sdpa"] = t(sdpa)
    return row


def test_report_renders_ratios_table_and_plot(tmp_path):
    rows = [_row("1.3b", 2.0, fla=4.0, sdpa=1.0, device=(2.0, 1.5)), _row("hd64", 3.0, sdpa=6.0)]
    assert grid_report.ratios(rows[0]) == {"fla/fwd": 2.0, "fla/fwd_bwd": 2.0, "sdpa/fwd": 0.5, "sdpa/fwd_bwd": 0.5,
                                           "fla/device": 0.75}
    assert grid_report.ratios(rows[1])["fla/fwd_bwd"] is None and grid_report.ratios(rows[1])["fla/device"] is None
    src = tmp_path / "grid.json"
    src.write_text(json.dumps(dict(title="t", machine={}, rows=rows)))
    assert grid.main(["--report", str(src)]) == 0
    md = (tmp_path / "grid.md").read_text().splitlines()
    assert len(md) == 4 and md[1].count("---") == md[0].count("|") - 1
    assert "| 1.3b | 8, 2048, 4, 512, 64, bf16 | 2.00 | 2.00 | 0.75 | 0.50 | 0.50 |" in md[2]
    assert "| hd64 |" in md[3] and "| - | - | - | 2.00 | 2.00 |" in md[3]
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_cost_counts_the_1_3b_shape_by_hand():
    c = cost.Cost.of(8, 2048, 4, 4, 512, 512, 64, el=2)
    tokens = 8 * 2048
    # inputs q, k, v (4 heads x 512 each), s and g (4 heads x 64 each), output o (4 x 512), 2 bytes each
    assert c.bytes_fwd == tokens * 2 * (3 * 4 * 512 + 2 * 4 * 64 + 4 * 512) == 285_212_672
    assert c.bytes_fwd_bwd == c.bytes_fwd + tokens * 2 * (2 * (3 * 4 * 512 + 2 * 4 * 64) + 4 * 512)
    # 8 x 32 chunks x 4 heads x (512 + 512) x 64 slots, float32: 268 MB, written and read twice more in backward
    assert c.states_fwd == 2 * 268_435_456 and c.states_fwd_bwd == 3 * c.states_fwd
    f = c.floors_ms(copy_bytes_per_s=1e12, flops_per_s=1e18)  # memory-bound by construction
    assert f["fwd"] == pytest.approx(c.bytes_fwd / 1e9) and f["fwd_bwd_states"] == pytest.approx(
        (c.bytes_fwd_bwd + c.states_fwd_bwd) / 1e9)
    assert c.floors_ms(1e30, 1e12)["fwd"] == pytest.approx(c.flops_fwd / 1e9)  # compute-bound by construction


def test_cost_counts_grouped_heads_and_a_partial_chunk_by_hand():
    """HQ = 8 query heads over H = 2 kv heads, K != V, T = 130 (three chunks, the last partial): q and o are per query
    head, k, v, s, g, the state updates and the chunk states per kv head (grouped heads share them)."""
    c = cost.Cost.of(2, 130, 8, 2, 16, 32, 8, el=2)
    tokens = 2 * 130
    assert c.bytes_fwd == tokens * 2 * (8 * 16 + 2 * 16 + 2 * 32 + 2 * 2 * 8 + 8 * 32) == 266_240
    assert c.bytes_fwd_bwd == c.bytes_fwd + tokens * 2 * (2 * (8 * 16 + 2 * 16 + 2 * 32 + 2 * 2 * 8) + 8 * 32)
    per_query_head = 2 * 64 * (16 + 8) + 2 * 64 * (8 + 32) + 2 * 16 * 8 + 2 * 8 * 32  # intra-chunk, inter-chunk reads
    per_kv_head = 2 * 16 * 8 + 2 * 8 * 32  # the state updates
    assert c.flops_fwd == tokens * (8 * per_query_head + 2 * per_kv_head) == 19_036_160
    assert c.flops_fwd_bwd == 3 * c.flops_fwd
    assert c.states_fwd == 2 * (2 * 3 * 2 * (16 + 32) * 8 * 4)  # B x NT x H x (K + V) x M float32, written and read
    assert c.states_fwd_bwd == 3 * c.states_fwd
    # fp16 rows: the same bytes as bf16 (the grid report's el = 2); float32 inputs double the input bytes only
    wide = cost.Cost.of(2, 130, 8, 2, 16, 32, 8, el=4)
    assert (wide.bytes_fwd, wide.states_fwd) == (2 * c.bytes_fwd, c.states_fwd)
    machine = dict(copy_bytes_per_s=3e12, bf16_flops_per_s=7e14)
    for name in ("gqa32-8", "hd128-fp16"):
        row = _row(name, 1.0)
        expected = cost.Cost.of(*(row[k] for k in ("B", "T", "HQ", "H", "K", "V", "M")), el=2).floors_ms(3e12, 7e14)
        assert grid_report.floors(row, machine) == expected


def test_report_shows_floors_when_the_run_measured_ceilings(tmp_path):
    machine = dict(copy_bytes_per_s=3e12, bf16_flops_per_s=7e14)
    floor = cost.Cost.of(8, 2048, 4, 4, 512, 512, 64).floors_ms(3e12, 7e14)["fwd_bwd_states"]
    md = grid_report.table([_row("1.3b", 2.0)], machine).splitlines()
    assert md[2].endswith(f"| {floor:.3f} | {2.0 / floor:.2f} |")
    assert grid_report.table([_row("1.3b", 2.0)], {}).splitlines()[2].endswith("| - | - |")


@pytest.mark.parametrize("spec, message", [("{ds", "is not JSON"), ('{"ds": 8}', "must map kernel names")])
def test_bad_launch_variant_is_refused_by_name(spec, message):
    with pytest.raises(SystemExit, match=message):
        grid.main(["--launch", spec])
    assert grid.launch_variants(['{"ds": {"num_warps": 8}}']) == [{"launch": {"ds": {"num_warps": 8}}}]


@pytest.mark.parametrize("spec, message", [("[1", "is not JSON"), ('{"chunk_state": "input"}', "SETTINGS fields"),
                                           ('{"launch": {"dz": {}}}', "unknown kernel")])
def test_bad_settings_variant_is_refused_by_name(spec, message):
    with pytest.raises(SystemExit, match=message):
        grid.main(["--settings", spec])
    assert grid.settings_variants(['{"chunk_states": "input"}']) == [{"chunk_states": "input"}]
    both = '{"state_dots": "split", "launch": {"dx": {"ND": 0}}}'
    assert grid.settings_variants([both]) == [{"state_dots": "split", "launch": {"dx": {"ND": 0}}}]



def test_compare_puts_two_runs_of_ours_side_by_side(tmp_path, capsys):
    base = dict(title="b", machine={}, rows=[_row("1.3b", 2.0, fla=3.0, device=(1.9, 2.5)), _row("hd64", 4.0)])
    head = dict(title="h", machine={}, rows=[_row("hd128", 1.0), _row("1.3b", 1.5), _row("hd64", 5.0)])
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "h.json").write_text(json.dumps(head))
    assert grid.main(["--compare", str(tmp_path / "b.json"), str(tmp_path / "h.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # header, rule, the two shared shapes in head's order (hd128 is in head only)
    assert lines[2] == "| 1.3b | 0.500 | 0.375 | 2.000 | 1.500 | 0.750 | 1.900 | - |"
    assert lines[3].startswith("| hd64 | 1.000 | 1.250 | 4.000 | 5.000 | 1.250 |")
    (tmp_path / "x.json").write_text(json.dumps(dict(title="x", machine={}, rows=[_row("h1", 1.0)])))
    with pytest.raises(SystemExit, match="share no shape"):
        grid.main(["--compare", str(tmp_path / "b.json"), str(tmp_path / "x.json")])


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_bad_gate_norm_is_refused_by_name(value, capsys):
    with pytest.raises(SystemExit):
        grid.main(["--list", "--gate-norm", value])
    assert "--gate-norm" in capsys.readouterr().err


def test_gate_norm_moves_the_chunk_spans_across_the_whole_chunk_bound():
    """What --gate-norm promises: at the default every chunk's decay span is under the bound under which kernel_a and
    kernel_ds factor a whole chunk; at 1 every chunk's is past it (so the fallback path is what gets timed)."""
    import torch

    from gsa.ops.triton.tiles import CHUNK_SPAN_MAX
    from op_inputs import decay_spans

    x = grid.Shape(2, 2048, 2, 2, 16, 16, 64)

    def spans(norm):
        return decay_spans(grid._inputs(torch, x, gate_norm=norm, device="cpu")["g"], 64)

    assert spans(grid.GATE_NORM).max() < CHUNK_SPAN_MAX < spans(1.0).min()
