"""Every Triton kernel compiles for Hopper (sm_90) on a machine without a GPU.

The interpreter that runs the kernels in CI does not compile them, so code the GPU compiler rejects (layouts,
reshapes, joins) would only fail on a lent GPU. benchmarks/kernel_resources.py compiles each kernel the op launches
with Triton's own ptxas and reads its registers; it runs in a subprocess because this process interprets kernels.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)
REPO = Path(__file__).resolve().parents[2]


def _run(shape, *extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernel_resources.py"), "--shape", shape, *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def test_chunk_kernels_compile_for_sm90():
    out = _run("tiny")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    names = {r[0] for r in rows}
    expected = {"chunk_gsa_fwd_kernel_cumsum", "chunk_gsa_fwd_kernel_h", "chunk_gsa_fwd_kernel_a",
                "chunk_gsa_fwd_kernel_o", "chunk_gsa_bwd_kernel_dh",
                "chunk_gsa_bwd_kernel_dx", "chunk_gsa_bwd_kernel_ds", "chunk_gsa_bwd_kernel_dg_exact",
                "rms_norm_fwd_kernel", "rms_norm_bwd_kernel", "chunk_gsa_fwd_kernel_h_carry",
                "chunk_gsa_bwd_kernel_dh_carry",
                "swiglu_fwd_kernel", "swiglu_bwd_kernel"}
    assert expected <= names, out.stdout
    assert all(0 < int(r[-3]) <= 255 for r in rows), out.stdout  # registers a thread


def test_decode_kernel_compiles_for_sm90():
    out = _run("decode")
    assert out.returncode == 0, out.stderr[-3000:]
    # three variants of each kernel: s and g given, the step from raw projections (swish and gate inside), and
    # that step with programmatic dependent launch (as on Hopper)
    assert out.stdout.count("fused_recurrent_gsa_fwd_kernel_k") == 3, out.stdout
    assert out.stdout.count("fused_recurrent_gsa_fwd_kernel_v") == 3, out.stdout
    # and the one-token product kernel (gsa.ops.triton.gemv) at K = 2048 and 4096
    assert out.stdout.count("gemv_kernel [PDL=True]") == 2, out.stdout
    assert out.stdout.count("PDL=True") == 4, out.stdout


@pytest.mark.slow
def test_linear_read_kernel_variants_compile_for_sm90():
    """slot_read="linear" compiles its own variants of the kernels that read the slots (LINEAR / SOFTMAX=False)."""
    out = _run("tiny", "--linear-read")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LINEAR=True" in out.stdout and "chunk_gsa_bwd_kernel_ds [SOFTMAX=False]" in out.stdout, out.stdout
    dec = _run("decode", "--linear-read")
    assert dec.returncode == 0 and "LINEAR=True" in dec.stdout, dec.stdout + dec.stderr[-3000:]

