"""benchmarks/recipes/t2r_distill_speed.py (the distillation step's speed per KL path and launch setting): a smoke
run on the CPU writes a row per variant, and bad variants and sizes are refused by name."""

import json

import pytest

from scripts_under_test import load_script


def load():
    return load_script("benchmarks/recipes/t2r_distill_speed.py")


def test_smoke_run_writes_a_row_per_variant(tmp_path):
    out = tmp_path / "speed.json"
    load().main(["--layers", "1", "--batch", "1", "--seq", "32", "--accum", "2", "--steps", "1", "--warmup", "0",
                 "--variants", "default,chunked-kl,plain-kl", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["default", "chunked-kl", "plain-kl"]
    # a fresh conversion is nearly its teacher: the KL is ~1e-4, which float32 rounding may put a hair below 0
    assert all(r["tokens_per_s"] > 0 and -1e-5 < r["loss"] < 1 for r in rows), rows


def test_bad_variants_and_sizes_are_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown variant\(s\) \['fast'\]"):
        load().main(["--variants", "default,fast", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--seq must be >= 1, got 0"):
        load().main(["--seq", "0", "--out", str(tmp_path / "x.json")])
