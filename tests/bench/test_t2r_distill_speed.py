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


def test_pure_student_is_converted_as_the_pure_recipe_does(tmp_path):
    """--student pure converts as the pure recipe's stage 0 does: no window, learned maps, gate biases; the default
    student is the hybrid."""
    script = load()
    for kind, expected in (("pure", (0, 0, "learned", True)), ("hybrid", (64, 4, "identity", False))):
        out = tmp_path / f"{kind}.json"
        script.main(["--student", kind, "--layers", "1", "--batch", "1", "--seq", "32", "--accum", "1", "--steps", "1",
                     "--warmup", "0", "--variants", "default", "--out", str(out)])
        data = json.loads(out.read_text())
        got = data["student"]
        assert (got["window_size"], got["num_sink_tokens"], got["feature_map"], got["gate_bias"]) == expected, got
        assert data["rows"][0]["tokens_per_s"] > 0


@pytest.mark.slow  # inductor on the CPU: ~30-45 s for one block
def test_compiled_variant_leaves_the_eager_student_alone(tmp_path, monkeypatch):
    """The compiled variant times a compiled copy of the student: the student itself stays eager for the variants
    after it; a run with it between eager variants writes a row for each (one inductor compile in all: main's
    calls of measure are watched instead of compiling a second time beside them)."""
    script = load()
    real, seen = script.measure, []

    def watched(student, teacher, args, device, name):
        row = real(student, teacher, args, device, name)
        seen.append((name, all(block._compiled_call_impl is None for block in student.model.layers)))
        return row

    monkeypatch.setattr(script, "measure", watched)
    out = tmp_path / "speed.json"
    script.main(["--student", "pure", "--layers", "1", "--batch", "1", "--seq", "32", "--accum", "1", "--steps", "1",
                 "--warmup", "1", "--variants", "default,compiled,one-stream", "--out", str(out)])
    # the student main passes on is eager after every variant, the compiled one included
    assert seen == [("default", True), ("compiled", True), ("one-stream", True)], seen
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["default", "compiled", "one-stream"]
    assert all(r["tokens_per_s"] > 0 and r["first_step_s"] > 0 for r in rows), rows
