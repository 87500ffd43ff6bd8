"""scripts/t2r_layer_errors.py: per-layer relative errors of a converted student against its teacher. The
teacher-input column, weighed back by the teacher outputs' mean squares, is exactly stage 1's loss
(gsa.convert.distill.attention_transfer_loss, computed there independently); the command line writes a row a
layer."""

import json

import pytest
import torch

from convert_teachers import tiny_teacher
from gsa.convert import from_pretrained_transformer
from gsa.convert.distill import attention_transfer_loss
from scripts_under_test import load_script


def load():
    return load_script("scripts/t2r_layer_errors.py")


def test_teacher_input_errors_weigh_back_to_the_stage_1_loss():
    teacher = tiny_teacher("llama").eval()
    student = from_pretrained_transformer(teacher, dtype=torch.float32).eval()
    ids = torch.randint(0, teacher.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    script = load()
    rows = script.layer_errors(script.teacher_io(teacher, ids), student, ids)
    assert [r["layer"] for r in rows] == list(range(teacher.config.num_hidden_layers))
    assert all(r["attn"] > 0 and r["stream"] > 0 for r in rows)
    weighed = sum(r["attn"] * r["target_ms"] for r in rows) / len(rows)
    with torch.no_grad():
        stage1 = float(attention_transfer_loss(student, teacher, ids))
    assert weighed == pytest.approx(stage1, rel=1e-5)


def test_cli_writes_a_row_a_layer(tmp_path, capsys):
    from gsa.data import byte_tokenizer, prepare_text_data

    teacher_dir = tmp_path / "teacher"
    tiny_teacher("llama", vocab_size=300).save_pretrained(teacher_dir)
    byte_tokenizer().save_pretrained(teacher_dir)
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 60}) + "\n" for i in range(20)))
    tokens = prepare_text_data([str(src)], str(teacher_dir), cache_dir=tmp_path / "cache", heldout_fraction=0.3,
                               progress=False).cache_path
    out = tmp_path / "errors.json"
    assert load().main(["--tokens", tokens, "--teacher", str(teacher_dir), "--student", "converted=convert",
                        "--windows", "2", "--seq-len", "32", "--out", str(out)]) == 0
    table = json.loads(out.read_text())["layers"]["converted"]
    assert len(table) == 2 and len(capsys.readouterr().out.splitlines()) == 3  # header + one line a layer
    with pytest.raises(SystemExit):
        load().main(["--tokens", tokens, "--teacher", str(teacher_dir), "--student", "converted"])
