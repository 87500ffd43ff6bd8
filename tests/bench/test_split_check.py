"""benchmarks/split_check.py (the walks' SPLIT against the default walk, per walk and pipeline depth): under the
interpreter every case matches the default bitwise, so each row it prints reads 0 for the output and every
gradient."""

import re

import pytest

from scripts_under_test import load_script
from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the interpreter's result (CPU only)")
def test_split_check_reads_zero_under_the_interpreter(capsys):
    import gsa.ops.triton.chunk_h as chunk_h

    script = load_script("benchmarks/split_check.py")
    try:
        assert script.main(["--dtype", "fp16", "--device", "cpu", "--shape", "1,70,2,2,32,32,16"]) == 0
    finally:
        assert not chunk_h.SPLIT_ON_GPU  # the script lifts the refusal while it runs, then restores it
    rows = [line for line in capsys.readouterr().out.splitlines() if "stages" in line]
    assert len(rows) == len(script.CASES), rows
    diffs = [float(d) for row in rows for d in re.findall(r" (\S+e[+-]\d+)", row)]
    assert len(diffs) == len(rows) * 8 and all(d == 0 for d in diffs), rows


def test_split_check_refuses_an_unknown_dtype():
    with pytest.raises(SystemExit, match=r"unknown --dtype \['bf8'\]"):
        load_script("benchmarks/split_check.py").main(["--dtype", "fp16,bf8", "--device", "cpu"])
