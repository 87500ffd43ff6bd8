"""kernel_dx and kernel_o walking several D tiles a program (launch option "ND"; launch.d_tiles_per_program): the
whole op, forward, final states and every gradient against the float64 reference, at tile counts ND divides and
does not, with grouped heads and packed sequences; and the option's choice and checks."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_dx as chunk_dx  # noqa: E402
import gsa.ops.triton.chunk_o as chunk_o  # noqa: E402
from gsa.ops import parallel_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from gsa.ops.triton.launch import d_tiles_per_program  # noqa: E402
from launch_runs import recorded_run  # noqa: E402
from op_inputs import assert_matches, make_inputs, run  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


O, DX = "chunk_gsa_fwd_kernel_o", "chunk_gsa_bwd_kernel_dx"


def walked(x, nd, monkeypatch, **kw):
    """run(chunk_op, ...) on float32 copies of x with kernel_dx and kernel_o at ND = nd and 16-wide D tiles, and the
    (kernel, ND, grid) of their launches."""
    launch = {**SETTINGS.launch, "dx": {"ND": nd, "BD": 16}, "o": {"ND": nd, "BD": 16}}
    return recorded_run(x, monkeypatch, [chunk_dx, chunk_o], ("kernel", "ND", "grid"), launch, **kw)


@pytest.mark.parametrize("nd", [2, 3, 4])
def test_d_tiles_a_program_dividing_or_not(nd, monkeypatch):
    """K = 48 and V = 64 in 16-wide tiles (3 and 4 tiles): ND = 2 and 3 leave an empty tile past the end of one
    pass, ND = 4 one program a head and chunk for both; initial and final states, a partial last chunk."""
    x = make_inputs(B=2, T=70, HQ=2, H=2, K=48, V=64, M=24, tau=1.0)
    got, launches = walked(x, nd, monkeypatch)
    nt = 4  # 2 sequences of 2 chunks
    assert sorted(launches) == sorted([(O, min(nd, 4), (-(-4 // nd) * 2 * nt,)),
                                       (O, min(nd, 3), (-(-3 // nd) * 2 * nt,)),
                                       (DX, min(nd, 4), (-(-4 // nd) * 2 * nt,)),
                                       (DX, min(nd, 3), (-(-3 // nd) * 2 * nt,))])
    assert_matches(got, run(parallel_reference, x, scale=0.3), tol=2e-5)


def test_d_tiles_a_program_with_grouped_heads_and_packed_sequences(monkeypatch):
    """Two query heads a kv head (kernel_dx's P per query head inside the D loop) over packed sequences of 1, 64
    and 37 tokens."""
    cu = torch.tensor([0, 1, 65, 102])
    x = make_inputs(B=1, T=102, HQ=4, H=2, K=64, V=40, M=20, N=3, tau=1.0)
    got, launches = walked(x, 0, monkeypatch, cu_seqlens=cu.to(DEVICE, torch.int32))
    if DEVICE == "cpu":  # no SMs to fill: K's 4 tiles in one program; V's 3 are too few for the auto choice
        assert {(name, nd) for name, nd, _ in launches} == {(O, 4), (O, 1), (DX, 4), (DX, 1)}
    assert_matches(got, run(parallel_reference, x, scale=0.3, cu_seqlens=cu), tol=2e-5)


def test_auto_keeps_four_programs_an_sm(monkeypatch):
    import gsa.ops.triton.launch as launch

    monkeypatch.setattr(launch, "sm_count", lambda device: 132)
    cuda = torch.device("cuda")
    assert d_tiles_per_program("dx", {"ND": 0}, 8, 4 * 256, cuda) == 8  # 1.3b's shape: 1024 programs of 8 tiles
    assert d_tiles_per_program("dx", {"ND": 0}, 8, 4 * 128, cuda) == 4  # 1024 programs of 4 tiles
    assert d_tiles_per_program("dx", {"ND": 0}, 8, 4 * 64, cuda) == 1  # 512 programs of 4 tiles would be < 528
    assert d_tiles_per_program("dx", {"ND": 0}, 12, 400, cuda) == 6  # 12 a program would leave 400 < 528
    assert d_tiles_per_program("dx", {"ND": 0}, 2, 10 ** 6, cuda) == 1  # 2 tiles a program lost on the H100
    assert d_tiles_per_program("dx", {}, 8, 1, cuda) == 1  # the default
    assert d_tiles_per_program("dx", {"ND": 16}, 8, 1, cuda) == 8


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_d_tiles_a_program_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"SETTINGS.launch\['o'\]\['ND'\].*int >= 0"):
        d_tiles_per_program("o", {"ND": bad}, 4, 1, torch.device("cpu"))
