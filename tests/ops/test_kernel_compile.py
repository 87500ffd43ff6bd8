"""Every Triton kernel compiles for Hopper (sm_90) on a machine without a GPU.

The interpreter that runs the kernels in CI does not compile them, so code the GPU compiler rejects (layouts,
reshapes, joins) would only fail on a lent GPU. benchmarks/kernel_resources.py compiles each kernel the op launches
with Triton's own ptxas and reads its registers; it runs in a subprocess because this process interprets kernels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)
REPO = Path(__file__).resolve().parents[2]


def _compile(tmp_path, shape, *extra) -> list[dict]:
    """The rows benchmarks/kernel_resources.py writes for `shape`: {"kernel", "warps", "REG", "STACK", "shared"}."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernel_resources.py"), "--shape", shape,
                          "--json", str(out), *extra], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())["rows"]


def test_chunk_kernels_compile_for_sm90(tmp_path):
    rows = _compile(tmp_path, "tiny", "--sass")
    names = {r["kernel"].split(" [")[0] for r in rows}  # without the variant's [flags]
    expected = {"chunk_gsa_fwd_kernel_cumsum", "chunk_gsa_fwd_kernel_h", "chunk_gsa_fwd_kernel_a_whole",
                "chunk_gsa_fwd_kernel_o", "chunk_gsa_bwd_kernel_dh",
                "chunk_gsa_bwd_kernel_dx", "chunk_gsa_bwd_kernel_ds", "chunk_gsa_bwd_kernel_dg_exact",
                "rms_norm_fwd_kernel", "rms_norm_bwd_kernel", "chunk_gsa_fwd_kernel_h_carry",
                "chunk_gsa_bwd_kernel_dh_carry",
                "swiglu_fwd_kernel", "swiglu_bwd_kernel", "kl_fwd_kernel", "kl_bwd_kernel"}
    assert expected <= names, names
    assert all(0 < r["REG"] <= 255 for r in rows), rows  # registers a thread
    # --sass: the instructions of each kernel's largest loop body; the state walks loop over chunks
    loops = {r["kernel"].split(" [")[0]: r["loop"] for r in rows}
    assert loops["chunk_gsa_fwd_kernel_h"] > 100 and loops["chunk_gsa_bwd_kernel_dh"] > 100, loops


def test_decode_kernel_compiles_for_sm90(tmp_path):
    names = [r["kernel"] for r in _compile(tmp_path, "decode")]
    # three variants of each kernel: s and g given, the step from raw projections (swish and gate inside), and
    # that step with programmatic dependent launch (as on Hopper)
    assert sum(n.startswith("fused_recurrent_gsa_fwd_kernel_k") for n in names) == 3, names
    assert sum(n.startswith("fused_recurrent_gsa_fwd_kernel_v") for n in names) == 3, names
    # and the one-token product kernel (gsa.ops.triton.gemv) at K = 2048 and 4096
    assert names.count("gemv_kernel [PDL=True]") == 2, names
    assert sum("PDL=True" in n for n in names) == 4, names


@pytest.mark.slow
def test_linear_read_kernel_variants_compile_for_sm90(tmp_path):
    """slot_read="linear" compiles its own variants of the kernels that read the slots (LINEAR / SOFTMAX=False)."""
    names = [r["kernel"] for r in _compile(tmp_path, "tiny", "--linear-read")]
    assert any("LINEAR=True" in n for n in names), names
    assert "chunk_gsa_bwd_kernel_ds [SOFTMAX=False,WHOLE=True]" in names, names
    decode = [r["kernel"] for r in _compile(tmp_path, "decode", "--linear-read")]
    assert any("LINEAR=True" in n for n in decode), decode


@pytest.mark.slow
def test_slot_tiled_ds_kernel_compiles_for_sm90(tmp_path):
    """At M = 128 in 64-wide slot tiles (the "@m128" entries emptied; kernel_ds's sub-block programs), kernel_ds
    with a program a slot tile (TILED) and the state kernels in slot tiles compile too; by default kernel_ds takes
    M = 128 as one tile. Only these kernels are compiled (--kernels): the others are the default's."""
    names = [r["kernel"] for r in _compile(tmp_path, "m128", "--kernels", "kernel_ds")]
    assert names == ["chunk_gsa_bwd_kernel_ds [SOFTMAX=True]"], names
    tiled = {f"{n}@m128": {} for n in ("dh", "h", "h-narrow", "h-carry", "dh-narrow", "dh-carry")}
    tiled["ds@m128"] = {"WHOLE": False}
    names = [r["kernel"] for r in _compile(tmp_path, "m128", "--launch", json.dumps(tiled), "--kernels",
                                           "kernel_ds,kernel_h,kernel_dh")]
    assert "chunk_gsa_bwd_kernel_ds [SOFTMAX=True,TILED=True]" in names, names
    assert {n.split(" [")[0] for n in names} == {
        "chunk_gsa_bwd_kernel_ds", "chunk_gsa_fwd_kernel_h", "chunk_gsa_fwd_kernel_h_carry", "chunk_gsa_bwd_kernel_dh",
        "chunk_gsa_bwd_kernel_dh_carry"}, names


def test_kv_group_kernel_a_compiles_for_sm90(tmp_path):
    """kernel_a's sub-block programs, one per kv head (launch option GROUP, WHOLE off; the tiny shape has 2 query
    heads a kv head), and kernel_ds with a chunk a program (WHOLE)."""
    names = ("a", "a-small", "dp", "dp-small")
    launch = {n + suffix: {"GROUP": True, "WHOLE": False} for n in names for suffix in ("", "@gqa")}
    launch["ds"] = {"FUSED": True, "WHOLE": True}
    rows = _compile(tmp_path, "tiny", "--launch", json.dumps(launch))
    kernels = [r["kernel"] for r in rows]
    for backward in (False, True):
        assert f"chunk_gsa_fwd_kernel_a [BACKWARD={backward},LINEAR=False,GROUP=True]" in kernels, kernels
    assert "chunk_gsa_bwd_kernel_ds [SOFTMAX=True,WHOLE=True]" in kernels, kernels
