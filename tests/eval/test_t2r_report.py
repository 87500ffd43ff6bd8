"""scripts/t2r_report.py end to end on a tiny teacher and its converted student (CPU, seconds)."""

import json
import sys
from pathlib import Path

import pytest

from scripts_under_test import load_script

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from convert.convert_teachers import tiny_teacher  # noqa: E402


def _report_module():
    return load_script("scripts/t2r_report.py")


def test_t2r_report_scores_teacher_baseline_and_students(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from gsa.convert import from_pretrained_transformer
    from gsa.data import byte_tokenizer, load_text_data, prepare_text_data
    from gsa.data.cache import _is_heldout
    from gsa.eval.choice import multiple_choice_scores
    from gsa.eval.tasks import build_task

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    tok = byte_tokenizer()
    tiny_teacher("llama", vocab_size=300).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    from_pretrained_transformer(teacher_dir, num_slots=8).save_pretrained(student_dir)
    src = tmp_path / "corpus.jsonl"
    texts = [" ".join(f"Line {j} of document {i} holds some held out words." for j in range(12)) for i in range(60)]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cache = prepare_text_data([str(src)], str(teacher_dir), cache_dir=tmp_path / "cache", heldout_fraction=0.2,
                              progress=False).cache_path
    out = tmp_path / "report.json"
    mod = _report_module()
    rc = mod.main(["--tokens", cache, "--teacher", str(teacher_dir), "--student", f"s={student_dir}",
                   "--seq-len", "64", "--eval-sequences", "4", "--passkey-lengths", "300",
                   "--passkey-distances", "70-90", "--passkey-distance-length", "320",
                   "--passkey-examples", "2", "--batch-size", "2", "--decode-tokens", "16",
                   "--tasks", "cloze,next-sentence", "--task-examples", "8", "--task-context-words", "20",
                   "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert list(rows) == ["teacher", "teacher, window 64 + 4 sinks", "s"]
    teacher, window, student = rows.values()
    assert teacher["recovery"] == 1.0 and student["recovery"] == teacher["ppl"] / student["ppl"]
    # 64 recent tokens + 4 sinks cover the whole 64-token evaluation window: the teacher's own perplexity
    assert window["ppl"] == pytest.approx(teacher["ppl"], rel=1e-6) and window["recovery"] == pytest.approx(1.0)
    # the needle lies >= 70 tokens before the answer, beyond the window: the probe scores as its control
    for probe in ("300", "d70-90"):
        assert window[f"passkey_tok_{probe}"] == window[f"passkey_ctl_{probe}"]
    # randomly initialised models recall no key (the scoring itself is tested on an oracle in test_passkey.py)
    scores = [f"passkey{kind}_{probe}" for kind in ("", "_tok", "_ctl") for probe in ("300", "d70-90")]
    assert all(r[name] == 0.0 for r in rows.values() for name in scores)
    assert rows["s"]["decode_ms_per_token"] > 0 and "decode_ms_per_token" not in rows["teacher, window 64 + 4 sinks"]
    # the task columns: the tasks built from the held-out source documents (the report decodes them from the token
    # cache) and scored directly give the report's values; recovery is the student's acc over the teacher's
    heldout = [t for i, t in enumerate(texts) if _is_heldout(i, 0.2, 0)]
    decoded = mod.heldout_tasks(load_text_data(cache, str(teacher_dir)), ["cloze", "next-sentence"], 8, 20, 0)
    for task in ("cloze", "next-sentence"):
        built = build_task(task, heldout, 8, context_words=20)
        assert decoded[task] == built
        assert report["tasks"][task] == {"examples": 8, "choices": 4, "chance": 0.25, "context_words": 20, "seed": 0}
        for name, path in (("teacher", teacher_dir), ("s", student_dir)):
            model = AutoModelForCausalLM.from_pretrained(path).eval()
            scores = multiple_choice_scores(lambda x, m=model: m(x).logits, tok, built, batch_size=2)
            assert (rows[name][f"{task}_acc"], rows[name][f"{task}_acc_norm"]) == (scores["acc"], scores["acc_norm"])
        teacher_acc = rows["teacher"][f"{task}_acc"]
        for r in rows.values():
            assert r[f"{task}_recovery"] == (r[f"{task}_acc"] / teacher_acc if teacher_acc else None)


def test_t2r_report_decode_timing_is_per_step(tmp_path, capsys):
    """The decode figure is the median gap between consecutive generated tokens (one per step, from a streamer), so
    it is positive by construction (a difference of two generate timings can go negative on a busy machine);
    a single token has no gap and is refused before any model loads."""
    pytest.importorskip("transformers")
    mod = _report_module()
    model = tiny_teacher("llama", vocab_size=300).eval()
    import torch

    prompt = torch.randint(0, 300, (1, 12))
    ms = mod.decode_ms_per_token(model, prompt, 6)
    assert 0 < ms < 10_000
    with pytest.raises(ValueError, match="new >= 2"):
        mod.decode_ms_per_token(model, prompt, 1)
    with pytest.raises(SystemExit):
        mod.main(["--tokens", str(tmp_path / "none"), "--teacher", str(tmp_path), "--decode-tokens", "1",
                  "--out", str(tmp_path / "r.json")])
    assert "--decode-tokens must be 0 (no timing) or >= 2" in capsys.readouterr().err
    for extra, message in ((["--tasks", "cloze,x"], "--tasks takes cloze, next-sentence, got 'cloze,x'"),
                           (["--tasks", "cloze", "--task-examples", "0"], "--task-examples must be >= 1, got 0")):
        with pytest.raises(SystemExit):
            mod.main(["--tokens", str(tmp_path / "none"), "--teacher", str(tmp_path), "--out", str(tmp_path / "r.json"),
                      *extra])
        assert message in capsys.readouterr().err


def test_t2r_decode_speed_runs_teacher_and_both_students(tmp_path):
    """benchmarks/recipes/t2r_decode_speed.py on a 2-layer cut of the teacher's architecture (CPU, eager)."""
    pytest.importorskip("transformers")
    mod = load_script("benchmarks/recipes/t2r_decode_speed.py")
    out = tmp_path / "decode.json"
    assert mod.main(["--prefixes", "16", "--batches", "1", "--new-tokens", "2", "--layers", "2", "--no-compile",
                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"].split(" ")[0] for r in rows] == ["teacher", "hybrid", "plain"]
    assert all(r["ms_per_token"] > 0 and r["state_bytes_per_seq"] > 0 for r in rows)
    # the hybrid keeps its slots and a window of keys/values; the plain student the slots alone
    assert rows[1]["state_bytes_per_seq"] > rows[2]["state_bytes_per_seq"]
